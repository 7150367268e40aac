//! Reading `dict` objects, instance attributes and small `int`s of another process, for
//! every layout in [`DictKeysFormat`] and [`InstanceDictFormat`]. Everything is bounded: a
//! torn or hostile dict reads as a fault, never as a long loop or a large allocation.

use super::layout::{DictKeysFormat, InstanceDictFormat, Layout, LongFormat, ObjectLayout};
use super::strings::read_unicode;
use crate::mem::{Fields, MemError, MemoryExt, RemoteMemory};

/// Dicts with more entries than this are not read.
pub const MAX_DICT_ENTRIES: u64 = 1 << 16;
/// Larger hash tables are rejected outright (`MAX_DICT_ENTRIES` needs far fewer slots).
const MAX_LOG2_SIZE: u64 = 24;
/// `tp_basicsize` and `tp_dictoffset` beyond this are not believed.
const MAX_OBJECT_OFFSET: i64 = 1 << 20;

/// `Py_TPFLAGS_*` bits, the same in every version read (`Include/object.h`).
const TPFLAGS_INLINE_VALUES: u64 = 1 << 2; // 3.13+
const TPFLAGS_MANAGED_DICT: u64 = 1 << 4; // 3.11+
pub const TPFLAGS_LONG_SUBCLASS: u64 = 1 << 24;
pub const TPFLAGS_UNICODE_SUBCLASS: u64 = 1 << 28;
pub const TPFLAGS_DICT_SUBCLASS: u64 = 1 << 29;

/// `DICT_KEYS_GENERAL`: entries are `{hash, key, value}`; other kinds are `{key, value}`.
const DICT_KEYS_GENERAL: u8 = 0;
const DICT_KEYS_SPLIT: u8 = 2;
/// 3.8-3.10 `PyDictKeysObject`: `dk_refcnt, dk_size, dk_lookup, dk_usable, dk_nentries`.
const SIZED_DK_SIZE: u64 = 8;
const SIZED_DK_NENTRIES: u64 = 32;
const SIZED_HEADER: u64 = 40;
/// 3.11+ `PyDictKeysObject` byte fields; `dk_nentries` is the word before `dk_indices`.
const LOG2_DK_LOG2_SIZE: u64 = 8;
const LOG2_DK_LOG2_INDEX_BYTES: u64 = 9;
const LOG2_DK_KIND: u64 = 10;
/// 3.13+ `struct _dictvalues`: `capacity, size, embedded, valid` bytes, then `values[]`.
const VALUES313_HEADER: u64 = 8;

fn fault(addr: u64) -> MemError {
    MemError::Fault { addr }
}

fn at(base: u64, offset: u64) -> Result<u64, MemError> {
    base.checked_add(offset).ok_or(fault(base))
}

/// Turns a fault into `None`, so one torn entry can be skipped; other errors end the read.
pub fn skip_fault<T>(result: Result<T, MemError>) -> Result<Option<T>, MemError> {
    match result {
        Ok(value) => Ok(Some(value)),
        Err(MemError::Fault { .. }) => Ok(None),
        Err(e) => Err(e),
    }
}

/// `ob_type->tp_flags` of the object at `obj`.
pub fn type_flags(mem: &impl RemoteMemory, ol: &ObjectLayout, obj: u64) -> Result<u64, MemError> {
    let ty = mem.read_u64(at(obj, ol.ob_type)?)?;
    mem.read_u64(at(ty, ol.tp_flags)?)
}

/// The entries of a `PyDictKeysObject`, as `(key, value)` in entry order (the order of the
/// shared keys, for split tables). Deleted and unused entries are kept, so index `i` is
/// entry `i`; in split tables the values here are NULL.
fn read_keys(
    mem: &impl RemoteMemory,
    ol: &ObjectLayout,
    keys: u64,
) -> Result<Vec<(u64, u64)>, MemError> {
    let (entries_at, count, entry_size, key_at) = match ol.dict_keys_format {
        DictKeysFormat::Sized => {
            let head = mem.read_vec(keys, SIZED_HEADER as usize)?;
            let f = Fields::new(keys, &head);
            let size = u64::try_from(f.i64(SIZED_DK_SIZE)?).map_err(|_| fault(keys))?;
            let count = u64::try_from(f.i64(SIZED_DK_NENTRIES)?).map_err(|_| fault(keys))?;
            if !size.is_power_of_two() || size > 1 << MAX_LOG2_SIZE || count > size {
                return Err(fault(keys));
            }
            // `DK_IXSIZE`: the width of one index grows with the table.
            let index_width = match size {
                0..=0xff => 1,
                0x100..=0xffff => 2,
                _ => 4,
            };
            (at(keys, SIZED_HEADER + size * index_width)?, count, 24, 8)
        }
        DictKeysFormat::Log2 { header } => {
            let head = mem.read_vec(keys, header as usize)?;
            let f = Fields::new(keys, &head);
            let log2_size = u64::from(f.u8(LOG2_DK_LOG2_SIZE)?);
            let log2_index_bytes = u64::from(f.u8(LOG2_DK_LOG2_INDEX_BYTES)?);
            let kind = f.u8(LOG2_DK_KIND)?;
            let nentries = f.i64(header.checked_sub(8).ok_or(fault(keys))?)?;
            let count = u64::try_from(nentries).map_err(|_| fault(keys))?;
            if log2_size > MAX_LOG2_SIZE
                || log2_index_bytes > log2_size + 3
                || kind > DICT_KEYS_SPLIT
                || count > 1 << log2_size
            {
                return Err(fault(keys));
            }
            let entries_at = at(keys, header + (1 << log2_index_bytes))?;
            match kind {
                DICT_KEYS_GENERAL => (entries_at, count, 24, 8),
                _ => (entries_at, count, 16, 0),
            }
        }
    };
    if count > MAX_DICT_ENTRIES {
        return Err(fault(keys));
    }
    let bytes = mem.read_vec(entries_at, (count * entry_size) as usize)?;
    let f = Fields::new(entries_at, &bytes);
    (0..count)
        .map(|i| {
            let entry = i * entry_size;
            Ok((f.u64(entry + key_at)?, f.u64(entry + key_at + 8)?))
        })
        .collect()
}

/// Where `values[0]` sits in a `PyDictValues` (the prefix bytes of 3.11-3.12 lie before
/// the pointer; 3.13+ has a 4-byte header padded to a word).
fn values_start(layout: &Layout, values: u64) -> Result<u64, MemError> {
    match layout.object.instance_dict {
        InstanceDictFormat::Inline313 => at(values, VALUES313_HEADER),
        _ => Ok(values),
    }
}

/// The live `(key, value)` pairs of the dict at `dict`, in insertion order.
pub fn read_dict(
    mem: &impl RemoteMemory,
    layout: &Layout,
    dict: u64,
) -> Result<Vec<(u64, u64)>, MemError> {
    let ol = &layout.object;
    if type_flags(mem, ol, dict)? & TPFLAGS_DICT_SUBCLASS == 0 {
        return Err(fault(dict));
    }
    let keys = mem.read_u64(at(dict, ol.dict_keys)?)?;
    let values = mem.read_u64(at(dict, ol.dict_values)?)?;
    let mut entries = read_keys(mem, ol, keys)?;
    if values != 0 {
        // A split table: the keys are shared, the values are this dict's own.
        let start = values_start(layout, values)?;
        let bytes = mem.read_vec(start, entries.len() * 8)?;
        let f = Fields::new(start, &bytes);
        for (i, entry) in entries.iter_mut().enumerate() {
            entry.1 = f.u64(i as u64 * 8)?;
        }
    }
    entries.retain(|&(key, value)| key != 0 && value != 0);
    Ok(entries)
}

/// Index of the first entry whose key is the `str` `name`. Keys are compared by length
/// first, so most keys cost one small read; unreadable keys are skipped.
fn find_str(
    mem: &impl RemoteMemory,
    ol: &ObjectLayout,
    entries: &[(u64, u64)],
    name: &str,
) -> Result<Option<usize>, MemError> {
    let wanted = name.chars().count() as i64;
    for (i, &(key, _)) in entries.iter().enumerate() {
        if key == 0 {
            continue;
        }
        let Some(len) = skip_fault(at(key, ol.unicode_length).and_then(|a| mem.read_i64(a)))?
        else {
            continue;
        };
        if len != wanted {
            continue;
        }
        let is_str = skip_fault(type_flags(mem, ol, key))?
            .is_some_and(|f| f & TPFLAGS_UNICODE_SUBCLASS != 0);
        if is_str && skip_fault(read_unicode(mem, ol, key))?.is_some_and(|s| s == name) {
            return Ok(Some(i));
        }
    }
    Ok(None)
}

/// `dict[name]` for a `str` key, `None` if absent.
pub fn dict_get_str(
    mem: &impl RemoteMemory,
    layout: &Layout,
    dict: u64,
    name: &str,
) -> Result<Option<u64>, MemError> {
    let entries = read_dict(mem, layout, dict)?;
    Ok(find_str(mem, &layout.object, &entries, name)?.map(|i| entries[i].1))
}

/// Where an instance keeps its attributes.
enum Attributes {
    None,
    Dict(u64),
    /// A values array keyed by the type's shared keys; `capacity` when the version has it.
    Values {
        values: u64,
        capacity: Option<u64>,
    },
}

/// The instance attribute `name` of the object at `obj` (its `__dict__` entry, wherever
/// the version keeps it), `None` if it has none.
pub fn instance_attr(
    mem: &impl RemoteMemory,
    layout: &Layout,
    obj: u64,
    name: &str,
) -> Result<Option<u64>, MemError> {
    let ol = &layout.object;
    let ty = mem.read_u64(at(obj, ol.ob_type)?)?;
    match attributes(mem, layout, obj, ty)? {
        Attributes::None => Ok(None),
        Attributes::Dict(dict) => dict_get_str(mem, layout, dict, name),
        Attributes::Values { values, capacity } => {
            shared_value(mem, layout, ty, values, capacity, name)
        }
    }
}

fn attributes(
    mem: &impl RemoteMemory,
    layout: &Layout,
    obj: u64,
    ty: u64,
) -> Result<Attributes, MemError> {
    let ol = &layout.object;
    let flags = mem.read_u64(at(ty, ol.tp_flags)?)?;
    let word_before = |words: u64| mem.read_u64(obj.checked_sub(words * 8).ok_or(fault(obj))?);
    let dict_or_none = |dict: u64| {
        if dict == 0 {
            Attributes::None
        } else {
            Attributes::Dict(dict)
        }
    };
    if ol.instance_dict == InstanceDictFormat::DictOffset || flags & TPFLAGS_MANAGED_DICT == 0 {
        let offset = mem.read_i64(at(ty, ol.tp_dictoffset)?)?;
        // Negative offsets (variable-size objects such as int subclasses) are not read.
        if !(1..MAX_OBJECT_OFFSET).contains(&offset) {
            return Ok(Attributes::None);
        }
        return Ok(dict_or_none(mem.read_u64(at(obj, offset as u64)?)?));
    }
    Ok(match ol.instance_dict {
        // Read through `tp_dictoffset` above.
        InstanceDictFormat::DictOffset => Attributes::None,
        // 3.11: the dict 3 words before the object, else the values 4 words before.
        InstanceDictFormat::Managed311 => match word_before(3)? {
            0 => match word_before(4)? {
                0 => Attributes::None,
                values => Attributes::Values {
                    values,
                    capacity: None,
                },
            },
            dict => Attributes::Dict(dict),
        },
        // 3.12 `PyDictOrValues`: a dict, or `values - 1` (odd, so bit 0 tags it).
        InstanceDictFormat::Managed312 => match word_before(3)? {
            word if word & 1 == 1 => Attributes::Values {
                values: word.wrapping_add(1),
                capacity: None,
            },
            dict => dict_or_none(dict),
        },
        // 3.13+: `MANAGED_DICT_OFFSET` (one word before the object in free-threaded
        // builds), else the values inline after `tp_basicsize` if the type has them.
        InstanceDictFormat::Inline313 => {
            match word_before(if layout.free_threaded { 1 } else { 3 })? {
                0 if flags & TPFLAGS_INLINE_VALUES != 0 => {
                    let basicsize = mem.read_i64(at(ty, ol.tp_basicsize)?)?;
                    if !(1..MAX_OBJECT_OFFSET).contains(&basicsize) {
                        return Err(fault(ty));
                    }
                    let values = at(obj, basicsize as u64)?;
                    let [capacity, _size, _embedded, valid] = mem.read_array::<4>(values)?;
                    if valid == 0 {
                        Attributes::None
                    } else {
                        Attributes::Values {
                            values,
                            capacity: Some(u64::from(capacity)),
                        }
                    }
                }
                dict => dict_or_none(dict),
            }
        }
    })
}

/// `name` from an instance's values array, keyed by its type's shared keys
/// (`ht_cached_keys`). `capacity` bounds the index when the version records it.
fn shared_value(
    mem: &impl RemoteMemory,
    layout: &Layout,
    ty: u64,
    values: u64,
    capacity: Option<u64>,
    name: &str,
) -> Result<Option<u64>, MemError> {
    let ol = &layout.object;
    let cached = ol.ht_cached_keys.ok_or(fault(ty))?;
    let keys = mem.read_u64(at(ty, cached)?)?;
    if values == 0 || keys == 0 {
        return Ok(None);
    }
    let entries = read_keys(mem, ol, keys)?;
    let Some(index) = find_str(mem, ol, &entries, name)? else {
        return Ok(None);
    };
    if capacity.is_some_and(|c| index as u64 >= c) {
        return Ok(None);
    }
    let value = mem.read_u64(at(values_start(layout, values)?, index as u64 * 8)?)?;
    Ok((value != 0).then_some(value))
}

/// The value of the `int` at `obj` if it is non-negative and fits in 64 bits.
pub fn read_u64_int(
    mem: &impl RemoteMemory,
    ol: &ObjectLayout,
    obj: u64,
) -> Result<Option<u64>, MemError> {
    if type_flags(mem, ol, obj)? & TPFLAGS_LONG_SUBCLASS == 0 {
        return Err(fault(obj));
    }
    let size = mem.read_u64(at(obj, ol.long_size)?)?;
    let digits = match ol.long_format {
        LongFormat::SignedSize => match size as i64 {
            n if n < 0 => return Ok(None),
            n => n as u64,
        },
        // `lv_tag`: digit count << 3, then the sign in the low two bits (0 +, 1 zero, 2 -).
        LongFormat::Tagged => match size & 3 {
            0 => size >> 3,
            1 => return Ok(Some(0)),
            2 => return Ok(None),
            _ => return Err(fault(obj)),
        },
    };
    // Three 30-bit digits hold 90 bits: anything longer cannot fit.
    if digits > 3 {
        return Ok(None);
    }
    let start = at(obj, ol.long_digits)?;
    let bytes = mem.read_vec(start, digits as usize * 4)?;
    let f = Fields::new(start, &bytes);
    let mut value: u64 = 0;
    for i in (0..digits).rev() {
        let digit = f.u32(i * 4)?;
        if digit >= 1 << 30 {
            return Err(fault(start));
        }
        if value >> 34 != 0 {
            return Ok(None); // does not fit in 64 bits
        }
        value = (value << 30) | u64::from(digit);
    }
    Ok(Some(value))
}
