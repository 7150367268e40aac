//! Objects a reader meets on the way to thread names and code names: type objects,
//! `str` in every compact kind, `bytes`, `int`, `dict` (3.13+ keys layout), modules and
//! `threading.Thread` instances with a managed dict.

use super::builder::{Builder, Types};

/// `Py_TPFLAGS_*` (`Include/object.h`).
const TPFLAGS_MANAGED_DICT: u64 = 1 << 4;
const TPFLAGS_LONG_SUBCLASS: u64 = 1 << 24;
const TPFLAGS_UNICODE_SUBCLASS: u64 = 1 << 28;
const TPFLAGS_DICT_SUBCLASS: u64 = 1 << 29;
/// `SSTATE_INTERNED_IMMORTAL`: set on every string, so a reader that takes `kind` from the
/// wrong bits sees garbage.
const INTERNED_IMMORTAL: u32 = 2;

impl Builder {
    /// The types every image has.
    pub(super) fn new_types(&mut self) -> Types {
        Types {
            code: self.new_type("code", 0),
            str: self.new_type("str", TPFLAGS_UNICODE_SUBCLASS),
            bytes: self.new_type("bytes", 0),
            int: self.new_type("int", TPFLAGS_LONG_SUBCLASS),
            dict: self.new_type("dict", TPFLAGS_DICT_SUBCLASS),
            module: self.new_type("module", 0),
            thread: self.new_type("Thread", TPFLAGS_MANAGED_DICT),
        }
    }

    /// A type object: `tp_name` (a C string) and `tp_flags` are all a reader looks at.
    fn new_type(&mut self, name: &str, flags: u64) -> u64 {
        let c_name = self.alloc(name.len() as u64 + 1);
        self.image.write(c_name, name.as_bytes());
        self.image.write(c_name + name.len() as u64, &[0]);
        let size = self.off("type_object", "size");
        let ty = self.alloc(size);
        self.image
            .write_u64(ty + self.off("type_object", "tp_name"), c_name);
        // `tp_basicsize` follows `tp_name`.
        self.image
            .write_u64(ty + self.off("type_object", "tp_name") + 8, 64);
        self.image
            .write_u64(ty + self.off("type_object", "tp_flags"), flags);
        ty
    }

    /// A compact `str`: ASCII, or UCS-1/2/4 data after `PyCompactUnicodeObject`.
    pub fn str(&mut self, text: &str) -> u64 {
        let chars: Vec<u32> = text.chars().map(u32::from).collect();
        let max = chars.iter().copied().max().unwrap_or(0);
        let (kind, ascii) = match max {
            0..=0x7f => (1u32, true),
            0x80..=0xff => (1, false),
            0x100..=0xffff => (2, false),
            _ => (4, false),
        };
        let mut data = Vec::new();
        for &c in &chars {
            data.extend_from_slice(&c.to_le_bytes()[..kind as usize]);
        }
        data.extend(std::iter::repeat_n(0, kind as usize)); // the terminating NUL
        let ascii_size = self.off("unicode_object", "asciiobject_size");
        // `PyCompactUnicodeObject` adds `utf8_length` and `utf8` to `PyASCIIObject`.
        let header = if ascii { ascii_size } else { ascii_size + 16 };
        let obj = self.object(self.types.str, header + data.len() as u64);
        let shift = self.flavor.kind_shift;
        let state = INTERNED_IMMORTAL
            | (kind << shift)
            | (1 << (shift + 3)) // compact
            | (u32::from(ascii) << (shift + 4));
        self.image
            .write_u32(obj + self.off("unicode_object", "state"), state);
        self.image.write_u64(
            obj + self.off("unicode_object", "length"),
            chars.len() as u64,
        );
        // `hash` follows `length`: -1 until computed.
        self.image
            .write_u64(obj + self.off("unicode_object", "length") + 8, u64::MAX);
        self.image.write(obj + header, &data);
        obj
    }

    pub fn bytes(&mut self, data: &[u8]) -> u64 {
        let sval = self.off("bytes_object", "ob_sval");
        let obj = self.object(self.types.bytes, sval + data.len() as u64 + 1);
        self.image
            .write_u64(obj + self.off("bytes_object", "ob_size"), data.len() as u64);
        self.image.write(obj + sval, data);
        obj
    }

    /// A non-negative `int` (`lv_tag` = digit count << 3, 30-bit digits).
    pub fn int(&mut self, mut value: u64) -> u64 {
        let mut digits = Vec::new();
        while value != 0 {
            digits.push((value & ((1 << 30) - 1)) as u32);
            value >>= 30;
        }
        let at = self.off("long_object", "ob_digit");
        let obj = self.object(self.types.int, at + 4 * digits.len().max(1) as u64);
        let tag = if digits.is_empty() {
            1 // `SIGN_ZERO`
        } else {
            (digits.len() as u64) << 3
        };
        self.image
            .write_u64(obj + self.off("long_object", "lv_tag"), tag);
        for (i, digit) in digits.iter().enumerate() {
            self.image.write_u32(obj + at + 4 * i as u64, *digit);
        }
        obj
    }

    /// A combined-table dict (`ma_values` NULL) holding `entries` in order. `str_keys`
    /// picks `DICT_KEYS_UNICODE` (`{key, value}` entries) over `DICT_KEYS_GENERAL`
    /// (`{hash, key, value}`).
    pub fn dict(&mut self, entries: &[(u64, u64)], str_keys: bool) -> u64 {
        // `PyDictKeysObject`: dk_refcnt, dk_log2_size, dk_log2_index_bytes, dk_kind,
        // (dk_mutex), dk_version, dk_usable, dk_nentries, then 1-byte indices.
        let log2_size = (3..)
            .find(|s| (1u64 << s) * 2 >= 3 * entries.len() as u64)
            .unwrap();
        let size = 1u64 << log2_size;
        let entry_size = if str_keys { 16 } else { 24 };
        let keys = self.alloc(32 + size + entry_size * entries.len() as u64);
        self.image.write_u64(keys, 1);
        self.image.write(
            keys + 8,
            &[log2_size as u8, log2_size as u8, u8::from(str_keys)],
        );
        let usable = (size * 2 / 3) - entries.len() as u64;
        self.image.write_u64(keys + 16, usable);
        self.image.write_u64(keys + 24, entries.len() as u64);
        let mut indices = vec![0xffu8; size as usize];
        for (i, index) in indices.iter_mut().take(entries.len()).enumerate() {
            *index = i as u8;
        }
        self.image.write(keys + 32, &indices);
        let table = keys + 32 + size;
        for (i, &(key, value)) in entries.iter().enumerate() {
            let at = table + entry_size * i as u64;
            if str_keys {
                self.image.write_u64(at, key);
                self.image.write_u64(at + 8, value);
            } else {
                self.image.write_u64(at, 0x1234_5678); // me_hash
                self.image.write_u64(at + 8, key);
                self.image.write_u64(at + 16, value);
            }
        }
        let dict = self.object(self.types.dict, self.off("dict_object", "size"));
        let ob_size_at = self.off("pyobject", "size");
        self.image
            .write_u64(dict + ob_size_at, entries.len() as u64); // ma_used
        self.image
            .write_u64(dict + self.off("dict_object", "ma_keys"), keys);
        self.image
            .write_u64(dict + self.off("dict_object", "ma_values"), 0);
        dict
    }

    /// A dict with `str` keys.
    pub fn str_dict(&mut self, entries: &[(&str, u64)]) -> u64 {
        let entries: Vec<(u64, u64)> = entries.iter().map(|&(k, v)| (self.str(k), v)).collect();
        self.dict(&entries, true)
    }

    /// A module object (`PyModuleObject { PyObject_HEAD; PyObject *md_dict; ... }`).
    pub fn module(&mut self, md_dict: u64) -> u64 {
        let head = self.off("pyobject", "size");
        let module = self.object(self.types.module, head + 48);
        self.image.write_u64(module + head, md_dict);
        module
    }

    /// A `threading.Thread` whose attributes are in a managed dict: the word at
    /// `MANAGED_DICT_OFFSET` (-3 words by default, -1 word free-threaded) before it.
    pub fn thread_object(&mut self, attributes: u64) -> u64 {
        let obj = self.object(self.types.thread, 16);
        let words_before = if self.flavor.free_threaded { 1 } else { 3 };
        self.image.write_u64(obj - 8 * words_before, attributes);
        obj
    }
}
