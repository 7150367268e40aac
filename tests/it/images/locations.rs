//! Location tables (3.11+), encoded as CPython's compiler writes them
//! (`write_location_info_entry` in `Python/assemble.c`, described in
//! `InternalDocs/locations.md`): one header byte per entry (bit 7 set, a 4-bit kind, the
//! number of code units minus one), then the kind's varints.

/// One entry of a location table; `units` (1 to 8) is how many code units it covers.
#[derive(Debug, Clone, Copy)]
pub enum Loc {
    /// Codes 0-9: same line as the previous entry, a column and a width.
    Short { units: u8, col: u8 },
    /// Codes 10-12: the line moves on by `delta` (0 to 2); start and end columns.
    OneLine { units: u8, delta: u8 },
    /// Code 13: a signed line delta, no columns.
    NoColumn { units: u8, delta: i32 },
    /// Code 14: a signed line delta, then end line delta and both columns.
    Long { units: u8, delta: i32 },
    /// Code 15: no location at all.
    None { units: u8 },
}

impl Loc {
    pub fn units(self) -> u64 {
        let (Loc::Short { units, .. }
        | Loc::OneLine { units, .. }
        | Loc::NoColumn { units, .. }
        | Loc::Long { units, .. }
        | Loc::None { units }) = self;
        u64::from(units)
    }
}

/// Encodes entries as CPython's `write_location_info_entry` does.
pub fn location_table(entries: &[Loc]) -> Vec<u8> {
    let mut out = Vec::new();
    let header = |code: u8, units: u8| {
        assert!(
            (1..=8).contains(&units),
            "an entry covers 1 to 8 code units"
        );
        0x80 | (code << 3) | (units - 1)
    };
    for &entry in entries {
        match entry {
            Loc::Short { units, col } => {
                assert!(col < 80);
                out.push(header(col / 8, units));
                out.push(((col % 8) << 4) | 3);
            }
            Loc::OneLine { units, delta } => {
                assert!(delta <= 2);
                out.push(header(10 + delta, units));
                out.extend([4, 17]);
            }
            Loc::NoColumn { units, delta } => {
                out.push(header(13, units));
                signed_varint(&mut out, delta);
            }
            Loc::Long { units, delta } => {
                out.push(header(14, units));
                signed_varint(&mut out, delta);
                varint(&mut out, 1); // end line = line + 1
                varint(&mut out, 5); // column 4, plus one
                varint(&mut out, 100); // end column 99, plus one
            }
            Loc::None { units } => out.push(header(15, units)),
        }
    }
    out
}

fn varint(out: &mut Vec<u8>, mut value: u32) {
    while value >= 64 {
        out.push(0x40 | (value & 63) as u8);
        value >>= 6;
    }
    out.push(value as u8);
}

fn signed_varint(out: &mut Vec<u8>, value: i32) {
    let raw = if value < 0 {
        (value.unsigned_abs() << 1) | 1
    } else {
        (value as u32) << 1
    };
    varint(out, raw);
}
