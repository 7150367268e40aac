//! Reading `dict` objects, instance attributes and small `int`s of another process, for
//! every layout in [`DictKeysFormat`] and [`InstanceDictFormat`]. Everything is bounded: a
//! torn or hostile dict reads as a fault, never as a long loop or a large allocation.

use super::layout::{DictKeysFormat, InstanceDictFormat, Layout, LongFormat, ObjectLayout};
use super::strings::read_unicode;
use crate::mem::{Fields, MemError, MemoryExt, RemoteMemory};
use std::collections::HashMap;

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
/// Read into `entries` through `bytes` (both cleared first).
fn read_keys(
    mem: &impl RemoteMemory,
    ol: &ObjectLayout,
    keys: u64,
    bytes: &mut Vec<u8>,
    entries: &mut Vec<(u64, u64)>,
) -> Result<(), MemError> {
    entries.clear();
    let (entries_at, count, entry_size, key_at) = match ol.dict_keys_format {
        DictKeysFormat::Sized => {
            mem.read_into(keys, SIZED_HEADER as usize, bytes)?;
            let f = Fields::new(keys, bytes);
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
            mem.read_into(keys, header as usize, bytes)?;
            let f = Fields::new(keys, bytes);
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
    mem.read_into(entries_at, (count * entry_size) as usize, bytes)?;
    let f = Fields::new(entries_at, bytes);
    for i in 0..count {
        let entry = i * entry_size;
        entries.push((f.u64(entry + key_at)?, f.u64(entry + key_at + 8)?));
    }
    Ok(())
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
    let mut entries = Vec::new();
    read_dict_into(mem, layout, dict, &mut Vec::new(), &mut entries)?;
    Ok(entries)
}

/// [`read_dict`] into `entries`, through `bytes`: both are cleared first and keep their
/// capacity, so a caller that reuses them allocates nothing once they are large enough.
pub fn read_dict_into(
    mem: &impl RemoteMemory,
    layout: &Layout,
    dict: u64,
    bytes: &mut Vec<u8>,
    entries: &mut Vec<(u64, u64)>,
) -> Result<(), MemError> {
    read_dict_and_keys(mem, layout, dict, bytes, entries).map(|_| ())
}

/// [`read_dict_into`], returning the address of the dict's keys object.
fn read_dict_and_keys(
    mem: &impl RemoteMemory,
    layout: &Layout,
    dict: u64,
    bytes: &mut Vec<u8>,
    entries: &mut Vec<(u64, u64)>,
) -> Result<u64, MemError> {
    entries.clear();
    let ol = &layout.object;
    if type_flags(mem, ol, dict)? & TPFLAGS_DICT_SUBCLASS == 0 {
        return Err(fault(dict));
    }
    let keys = mem.read_u64(at(dict, ol.dict_keys)?)?;
    let values = mem.read_u64(at(dict, ol.dict_values)?)?;
    read_keys(mem, ol, keys, bytes, entries)?;
    if values != 0 {
        // A split table: the keys are shared, the values are this dict's own. 3.13+ records
        // how many values there is room for; slots past it are not values.
        let start = values_start(layout, values)?;
        let header = start - values;
        mem.read_into(values, header as usize + entries.len() * 8, bytes)?;
        let f = Fields::new(values, bytes);
        if header != 0 {
            entries.truncate(usize::from(f.u8(0)?));
        }
        for (i, entry) in entries.iter_mut().enumerate() {
            entry.1 = f.u64(header + i as u64 * 8)?;
        }
    }
    entries.retain(|&(key, value)| key != 0 && value != 0);
    Ok(keys)
}

/// Where `str` keys were found, so that looking the same names up again in the same table
/// reads no keys: (keys object, name) -> (entry index, key object). A hit counts only if
/// the entry still holds that key object, so a table that changed is searched again.
#[derive(Debug, Default)]
pub struct KeyIndex {
    found: HashMap<(u64, &'static str), (usize, u64)>,
}

/// Tables remembered at most; past this the index starts over.
const MAX_INDEXED: usize = 4096;

impl KeyIndex {
    fn find(
        &mut self,
        mem: &impl RemoteMemory,
        ol: &ObjectLayout,
        keys: u64,
        entries: &[(u64, u64)],
        name: &'static str,
    ) -> Result<Option<usize>, MemError> {
        if let Some(&(index, key)) = self.found.get(&(keys, name))
            && entries.get(index).is_some_and(|e| e.0 == key)
        {
            return Ok(Some(index));
        }
        let found = find_str(mem, ol, entries, name)?;
        if let Some(index) = found {
            if self.found.len() >= MAX_INDEXED {
                self.found.clear();
            }
            self.found.insert((keys, name), (index, entries[index].0));
        }
        Ok(found)
    }
}

/// [`dict_get_str`], remembering where the key was found in `index`.
pub fn dict_get_str_indexed(
    mem: &impl RemoteMemory,
    layout: &Layout,
    dict: u64,
    name: &'static str,
    index: &mut KeyIndex,
) -> Result<Option<u64>, MemError> {
    let mut entries = Vec::new();
    let keys = read_dict_and_keys(mem, layout, dict, &mut Vec::new(), &mut entries)?;
    Ok(index
        .find(mem, &layout.object, keys, &entries, name)?
        .map(|i| entries[i].1))
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

/// [`instance_attr`], remembering in `index` where the name sits in the dict or shared keys,
/// so that reading one attribute of many instances of a type costs a few reads each.
pub fn instance_attr_indexed(
    mem: &impl RemoteMemory,
    layout: &Layout,
    obj: u64,
    name: &'static str,
    index: &mut KeyIndex,
) -> Result<Option<u64>, MemError> {
    let ol = &layout.object;
    let ty = mem.read_u64(at(obj, ol.ob_type)?)?;
    match attributes(mem, layout, obj, ty)? {
        Attributes::None => Ok(None),
        Attributes::Dict(dict) => dict_get_str_indexed(mem, layout, dict, name, index),
        Attributes::Values { values, capacity } => {
            let cached = ol.ht_cached_keys.ok_or(fault(ty))?;
            let keys = mem.read_u64(at(ty, cached)?)?;
            if values == 0 || keys == 0 {
                return Ok(None);
            }
            let mut entries = Vec::new();
            read_keys(mem, ol, keys, &mut Vec::new(), &mut entries)?;
            let Some(i) = index.find(mem, ol, keys, &entries, name)? else {
                return Ok(None);
            };
            shared_slot(mem, layout, values, capacity, i)
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
    let mut entries = Vec::new();
    read_keys(mem, ol, keys, &mut Vec::new(), &mut entries)?;
    let Some(index) = find_str(mem, ol, &entries, name)? else {
        return Ok(None);
    };
    shared_slot(mem, layout, values, capacity, index)
}

/// Slot `index` of an instance's values array, `None` if empty or past its capacity.
fn shared_slot(
    mem: &impl RemoteMemory,
    layout: &Layout,
    values: u64,
    capacity: Option<u64>,
    index: usize,
) -> Result<Option<u64>, MemError> {
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

/// Builds CPython-shaped objects in a [`MemoryImage`](crate::mem::MemoryImage) for tests.
#[cfg(test)]
pub(super) mod fake {
    use super::*;
    use crate::mem::MemoryImage;
    use crate::python::tables;
    use crate::python::version::Version;

    pub fn layout(minor: u8) -> Layout {
        match minor {
            // No table for 3.13 (it comes from `_Py_DebugOffsets`): 3.12 with 3.13's values.
            13 => {
                let mut layout = tables::table(Version::new(3, 12, 1)).unwrap();
                layout.version = Version::new(3, 13, 0);
                layout.object.instance_dict = InstanceDictFormat::Inline313;
                layout
            }
            _ => tables::table(Version::new(3, minor, 1)).unwrap(),
        }
    }

    pub struct Fake {
        pub mem: MemoryImage,
        pub layout: Layout,
        next: u64,
        pub str_type: u64,
        pub int_type: u64,
        pub dict_type: u64,
    }

    impl Fake {
        pub fn new(layout: Layout) -> Self {
            let mut fake = Fake {
                mem: MemoryImage::new(),
                layout,
                next: 0x10_0000,
                str_type: 0,
                int_type: 0,
                dict_type: 0,
            };
            fake.str_type = fake.new_type("str", TPFLAGS_UNICODE_SUBCLASS, None);
            fake.int_type = fake.new_type("int", TPFLAGS_LONG_SUBCLASS, None);
            fake.dict_type = fake.new_type("dict", TPFLAGS_DICT_SUBCLASS, None);
            fake
        }

        /// `size` zeroed bytes, 64 bytes into their own block (room for pre-headers).
        pub fn alloc(&mut self, size: u64) -> u64 {
            let addr = self.next + 64;
            self.mem.write(self.next, &vec![0; (size + 64) as usize]);
            self.next += (size + 64 + 127) & !63;
            addr
        }

        pub fn object(&mut self, ty: u64, size: u64) -> u64 {
            let obj = self.alloc(size);
            self.mem.write_u64(obj + self.layout.object.ob_type, ty);
            obj
        }

        pub fn new_type(&mut self, name: &str, flags: u64, cached_keys: Option<u64>) -> u64 {
            let ol = self.layout.object.clone();
            let c_name = self.alloc(name.len() as u64 + 1);
            self.mem.write(c_name, name.as_bytes());
            let ty = self.alloc(1024);
            self.mem.write_u64(ty + ol.tp_name, c_name);
            self.mem.write_u64(ty + ol.tp_flags, flags);
            self.mem.write_u64(ty + ol.tp_basicsize, 16);
            if let Some(keys) = cached_keys {
                self.mem.write_u64(ty + ol.ht_cached_keys.unwrap(), keys);
            }
            ty
        }

        /// A compact ASCII `str`.
        pub fn str(&mut self, text: &str) -> u64 {
            let ol = self.layout.object.clone();
            let obj = self.object(self.str_type, ol.unicode_ascii_size + text.len() as u64 + 1);
            self.mem
                .write_u64(obj + ol.unicode_length, text.len() as u64);
            let (kind, compact, ascii) = (1, 1 << 3, 1 << 4);
            self.mem.write_u32(
                obj + ol.unicode_state,
                (kind | compact | ascii) << ol.unicode_kind_shift,
            );
            self.mem.write(obj + ol.unicode_ascii_size, text.as_bytes());
            obj
        }

        pub fn int(&mut self, value: u64) -> u64 {
            let ol = self.layout.object.clone();
            let mut digits = Vec::new();
            let mut rest = value;
            while rest != 0 {
                digits.push((rest & ((1 << 30) - 1)) as u32);
                rest >>= 30;
            }
            let obj = self.object(self.int_type, ol.long_digits + 4 * digits.len() as u64 + 4);
            let size = match ol.long_format {
                LongFormat::SignedSize => digits.len() as u64,
                LongFormat::Tagged if value == 0 => 1,
                LongFormat::Tagged => (digits.len() as u64) << 3,
            };
            self.mem.write_u64(obj + ol.long_size, size);
            for (i, digit) in digits.iter().enumerate() {
                self.mem
                    .write_u32(obj + ol.long_digits + 4 * i as u64, *digit);
            }
            obj
        }

        /// A keys object holding `entries` in order (`general`: `{hash, key, value}`).
        pub fn keys(&mut self, entries: &[(u64, u64)], general: bool, split: bool) -> u64 {
            let entry_size: u64 = if general { 24 } else { 16 };
            let value_at = entry_size - 8;
            let (keys, entries_at) = match self.layout.object.dict_keys_format {
                DictKeysFormat::Sized => {
                    let keys = self.alloc(SIZED_HEADER + 8 + 24 * 5);
                    self.mem.write_u64(keys + SIZED_DK_SIZE, 8);
                    self.mem
                        .write_u64(keys + SIZED_DK_NENTRIES, entries.len() as u64);
                    (keys, keys + SIZED_HEADER + 8)
                }
                DictKeysFormat::Log2 { header } => {
                    let keys = self.alloc(header + 8 + entry_size * 5);
                    let kind = if general {
                        0
                    } else if split {
                        2
                    } else {
                        1
                    };
                    self.mem.write(keys + LOG2_DK_LOG2_SIZE, &[3, 3, kind]);
                    self.mem.write_u64(keys + header - 8, entries.len() as u64);
                    (keys, keys + header + 8)
                }
            };
            for (i, &(key, value)) in entries.iter().enumerate() {
                let entry = entries_at + i as u64 * entry_size;
                self.mem.write_u64(entry + value_at - 8, key);
                self.mem.write_u64(entry + value_at, value);
            }
            keys
        }

        /// A combined dict (or split, when `values` is given: a `PyDictValues*`).
        pub fn dict(&mut self, keys: u64, values: u64) -> u64 {
            let ol = self.layout.object.clone();
            let dict = self.object(self.dict_type, 48);
            self.mem.write_u64(dict + ol.dict_keys, keys);
            self.mem.write_u64(dict + ol.dict_values, values);
            dict
        }

        /// A combined dict with `str` keys.
        pub fn str_dict(&mut self, items: &[(&str, u64)]) -> u64 {
            let entries: Vec<(u64, u64)> = items.iter().map(|&(k, v)| (self.str(k), v)).collect();
            let general = self.layout.object.dict_keys_format == DictKeysFormat::Sized;
            let keys = self.keys(&entries, general, false);
            self.dict(keys, 0)
        }

        /// A values array for 3.11+ (`values[0]` at the returned address but for 3.13's
        /// header).
        pub fn values(&mut self, values: &[u64]) -> u64 {
            let start = self.alloc(8 + 8 * values.len() as u64);
            let header = match self.layout.object.instance_dict {
                InstanceDictFormat::Inline313 => {
                    self.mem
                        .write(start, &[values.len() as u8, values.len() as u8, 0, 1]);
                    8
                }
                _ => 0,
            };
            for (i, &v) in values.iter().enumerate() {
                self.mem.write_u64(start + header + 8 * i as u64, v);
            }
            start
        }
    }
}

#[cfg(test)]
mod tests {
    use super::fake::{Fake, layout};
    use super::*;

    #[test]
    fn finds_str_keys_in_a_3_12_dict() {
        let mut f = Fake::new(layout(12));
        let (a, b, c) = (f.alloc(8), f.alloc(8), f.alloc(8));
        let dict = f.str_dict(&[("threading", a), ("threadinG", b), ("_active", c)]);
        let get = |name| dict_get_str(&f.mem, &f.layout, dict, name).unwrap();
        assert_eq!(get("threading"), Some(a));
        assert_eq!(get("threadinG"), Some(b));
        assert_eq!(get("_active"), Some(c));
        assert_eq!(get("thread"), None);
        assert_eq!(get("sys"), None);
    }

    #[test]
    fn skips_deleted_entries_and_non_str_keys() {
        let mut f = Fake::new(layout(12));
        let (old, new, int_key) = (f.alloc(8), f.alloc(8), f.int(7));
        let name = f.str("_name");
        let not_str = f.object(f.int_type, 64);
        f.mem.write_u64(not_str + f.layout.object.unicode_length, 5);
        // A deleted entry keeps nothing but its slot; general keys mix str and int.
        let keys = f.keys(
            &[(name, 0), (int_key, old), (not_str, old), (name, new)],
            true,
            false,
        );
        let dict = f.dict(keys, 0);
        assert_eq!(
            dict_get_str(&f.mem, &f.layout, dict, "_name"),
            Ok(Some(new))
        );
        assert_eq!(read_dict(&f.mem, &f.layout, dict).unwrap().len(), 3);
    }

    #[test]
    fn reads_a_3_8_split_dict_through_tp_dictoffset() {
        let mut f = Fake::new(layout(8));
        let (name, other) = (f.str("_name"), f.str("_ident"));
        let (v_name, v_other) = (f.alloc(8), f.alloc(8));
        let keys = f.keys(&[(other, 0), (name, 0)], true, true);
        let values = f.alloc(16);
        f.mem.write_u64(values, v_other);
        f.mem.write_u64(values + 8, v_name);
        let dict = f.dict(keys, values);
        let ty = f.new_type("Thread", 0, None);
        f.mem.write_u64(ty + f.layout.object.tp_dictoffset, 16);
        let obj = f.object(ty, 24);
        f.mem.write_u64(obj + 16, dict);
        assert_eq!(
            instance_attr(&f.mem, &f.layout, obj, "_name"),
            Ok(Some(v_name))
        );
        assert_eq!(
            instance_attr(&f.mem, &f.layout, obj, "_ident"),
            Ok(Some(v_other))
        );
        assert_eq!(instance_attr(&f.mem, &f.layout, obj, "_daemonic"), Ok(None));
        f.mem.write_u64(obj + 16, 0);
        assert_eq!(instance_attr(&f.mem, &f.layout, obj, "_name"), Ok(None));
    }

    /// An instance of a heap type whose attributes `_target, _name` live in a values array.
    fn managed_instance(f: &mut Fake, flags: u64) -> (u64, u64, u64) {
        let (target, name) = (f.str("_target"), f.str("_name"));
        let keys = f.keys(&[(target, 0), (name, 0)], false, true);
        let ty = f.new_type("Thread", TPFLAGS_MANAGED_DICT | flags, Some(keys));
        let value = f.str("worker-1");
        let values = f.values(&[0, value]);
        (f.object(ty, 16), values, value)
    }

    #[test]
    fn reads_3_11_values_and_dicts() {
        let mut f = Fake::new(layout(11));
        let (obj, values, value) = managed_instance(&mut f, 0);
        f.mem.write_u64(obj - 32, values);
        assert_eq!(
            instance_attr(&f.mem, &f.layout, obj, "_name"),
            Ok(Some(value))
        );
        assert_eq!(instance_attr(&f.mem, &f.layout, obj, "_target"), Ok(None));
        let other = f.alloc(8);
        let dict = f.str_dict(&[("_name", other)]);
        f.mem.write_u64(obj - 24, dict);
        assert_eq!(
            instance_attr(&f.mem, &f.layout, obj, "_name"),
            Ok(Some(other))
        );
    }

    #[test]
    fn reads_3_12_tagged_values() {
        let mut f = Fake::new(layout(12));
        let (obj, values, value) = managed_instance(&mut f, 0);
        f.mem.write_u64(obj - 24, values - 1);
        assert_eq!(
            instance_attr(&f.mem, &f.layout, obj, "_name"),
            Ok(Some(value))
        );
        // A materialized split dict shares the type's keys and points at the same values.
        let ty = f.mem.read_u64(obj + f.layout.object.ob_type).unwrap();
        let cached = f.layout.object.ht_cached_keys.unwrap();
        let keys = f.mem.read_u64(ty + cached).unwrap();
        let dict = f.dict(keys, values);
        f.mem.write_u64(obj - 24, dict);
        assert_eq!(
            instance_attr(&f.mem, &f.layout, obj, "_name"),
            Ok(Some(value))
        );
        f.mem.write_u64(obj - 24, 0);
        assert_eq!(instance_attr(&f.mem, &f.layout, obj, "_name"), Ok(None));
    }

    #[test]
    fn reads_3_13_inline_values() {
        let mut f = Fake::new(layout(13));
        let (obj, _, _) = managed_instance(&mut f, TPFLAGS_INLINE_VALUES);
        let value = f.str("inline");
        // tp_basicsize is 16: the values follow the object header.
        f.mem.write(obj + 16, &[2, 1, 1, 1]);
        f.mem.write_u64(obj + 16 + 8 + 8, value);
        assert_eq!(
            instance_attr(&f.mem, &f.layout, obj, "_name"),
            Ok(Some(value))
        );
        f.mem.write(obj + 16, &[1, 1, 1, 1]); // capacity 1: index 1 is out of range
        assert_eq!(instance_attr(&f.mem, &f.layout, obj, "_name"), Ok(None));
        f.mem.write(obj + 16, &[2, 1, 1, 0]); // invalidated values
        assert_eq!(instance_attr(&f.mem, &f.layout, obj, "_name"), Ok(None));
        // A materialized dict keeps using the embedded values, bounded by their capacity.
        f.mem.write(obj + 16, &[2, 1, 1, 1]);
        let ty = f.mem.read_u64(obj + f.layout.object.ob_type).unwrap();
        let cached = f.layout.object.ht_cached_keys.unwrap();
        let keys = f.mem.read_u64(ty + cached).unwrap();
        let dict = f.dict(keys, obj + 16);
        f.mem.write_u64(obj - 24, dict);
        assert_eq!(read_dict(&f.mem, &f.layout, dict).unwrap().len(), 1);
        assert_eq!(
            instance_attr(&f.mem, &f.layout, obj, "_name"),
            Ok(Some(value))
        );
        f.mem.write(obj + 16, &[1, 1, 1, 1]);
        assert_eq!(instance_attr(&f.mem, &f.layout, obj, "_name"), Ok(None));
    }

    #[test]
    fn reads_unsigned_ints_in_both_formats() {
        for minor in [8, 12] {
            let mut f = Fake::new(layout(minor));
            for value in [0, 1, (1 << 30) - 1, 1 << 30, 0x7f3a_1b2c_3640, u64::MAX] {
                let obj = f.int(value);
                assert_eq!(
                    read_u64_int(&f.mem, &f.layout.object, obj),
                    Ok(Some(value)),
                    "3.{minor} {value}"
                );
            }
            let big = f.int(0);
            let ol = f.layout.object.clone();
            let (four_digits, negative) = match ol.long_format {
                LongFormat::SignedSize => (4, u64::MAX),
                LongFormat::Tagged => (4 << 3, (1 << 3) | 2),
            };
            f.mem.write_u64(big + ol.long_size, four_digits);
            assert_eq!(read_u64_int(&f.mem, &ol, big), Ok(None));
            f.mem.write_u64(big + ol.long_size, negative);
            assert_eq!(read_u64_int(&f.mem, &ol, big), Ok(None));
            // 2**64 needs three digits but does not fit.
            f.mem.write_u64(big + ol.long_size, three_digits(&ol));
            f.mem.write_u32(big + ol.long_digits + 8, 1 << 4);
            assert_eq!(read_u64_int(&f.mem, &ol, big), Ok(None));
            f.mem.write_u32(big + ol.long_digits, 1 << 30); // not a 30-bit digit
            assert!(read_u64_int(&f.mem, &ol, big).is_err());
        }
    }

    fn three_digits(ol: &ObjectLayout) -> u64 {
        match ol.long_format {
            LongFormat::SignedSize => 3,
            LongFormat::Tagged => 3 << 3,
        }
    }

    #[test]
    fn rejects_garbage_without_panicking() {
        let mut f = Fake::new(layout(12));
        let dict = f.str_dict(&[("a", 1)]);
        let keys = f.mem.read_u64(dict + 32).unwrap();
        f.mem.write_u64(keys + 24, 1 << 40); // dk_nentries
        assert!(read_dict(&f.mem, &f.layout, dict).is_err());
        f.mem.write_u64(keys + 24, 1);
        f.mem.write(keys + 8, &[3, 60, 0]); // dk_log2_index_bytes
        assert!(read_dict(&f.mem, &f.layout, dict).is_err());
        f.mem.write_u64(dict + 8, f.int_type); // not a dict
        assert!(read_dict(&f.mem, &f.layout, dict).is_err());
        // Pseudo-random words everywhere: every read must end in Ok or Err.
        let mut state = 0x9e37_79b9_7f4a_7c15u64;
        let base = 0x40_0000;
        for i in 0..4096u64 {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            let word = if i % 3 == 0 {
                base + (state % 0x8000)
            } else {
                state % 512
            };
            f.mem.write_u64(base + i * 8, word);
        }
        for layout in [layout(8), layout(11), layout(12), layout(13)] {
            f.layout = layout;
            for obj in (base..base + 0x8000).step_by(8) {
                let _ = read_dict(&f.mem, &f.layout, obj);
                let _ = instance_attr(&f.mem, &f.layout, obj, "_name");
                let _ = read_u64_int(&f.mem, &f.layout.object, obj);
            }
        }
    }
}
