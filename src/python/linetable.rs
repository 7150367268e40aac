//! Line numbers from code objects line tables.
//!
//! [`line_for_offset`] answers what CPython's `PyCode_Addr2Line` would for the same code
//! object: the source line of the instruction `byte_offset` bytes into the bytecode. The
//! table comes from the target's memory, so it is treated as hostile: every loop is
//! bounded by the table length, all arithmetic is checked, and a malformed table gives
//! `None` rather than a guess.
//!
//! The three formats, as described in CPython's `Objects/lnotab_notes.txt` and
//! `InternalDocs/locations.md`:
//!
//! - `co_lnotab` (3.8-3.9): pairs of (bytecode delta: u8, line delta: i8). Each pair's
//!   line applies from its address onwards.
//! - `co_linetable` (3.10): pairs of (range length in bytes: u8, line delta: i8), each
//!   pair covering the range that follows it; a line delta of -128 means "no line".
//! - The location table (3.11+): entries of one header byte (bit 7 set; bits 3-6 a kind;
//!   bits 0-2 the range length in code units, minus one) followed by kind-specific
//!   varints, whose bytes all have bit 7 clear.

use super::layout::LineTableFormat;

/// The source line of the instruction `byte_offset` bytes into the bytecode, or `None`
/// when the table has no line for it or is malformed.
pub fn line_for_offset(
    format: LineTableFormat,
    table: &[u8],
    first_line: i32,
    byte_offset: u64,
) -> Option<u32> {
    let line = match format {
        LineTableFormat::Lnotab => lnotab_line(table, first_line, byte_offset),
        LineTableFormat::Linetable310 => linetable310_line(table, first_line, byte_offset),
        LineTableFormat::Locations => locations_line(table, first_line, byte_offset),
    }?;
    u32::try_from(line).ok()
}

/// 3.8-3.9: the line of the last pair starting at or before the offset. Offsets past the
/// table keep the last line, as in CPython.
fn lnotab_line(table: &[u8], first_line: i32, byte_offset: u64) -> Option<i64> {
    let mut line = i64::from(first_line);
    let mut addr: u64 = 0;
    for pair in table.chunks_exact(2) {
        addr = addr.checked_add(u64::from(pair[0]))?;
        if addr > byte_offset {
            break;
        }
        line = line.checked_add(i64::from(pair[1] as i8))?;
    }
    Some(line)
}

/// 3.10: the line of the pair whose range holds the offset. Zero-length pairs only
/// move the line on; offsets past the last range have no line.
fn linetable310_line(table: &[u8], first_line: i32, byte_offset: u64) -> Option<i64> {
    let mut line = i64::from(first_line);
    let mut end: u64 = 0;
    for pair in table.chunks_exact(2) {
        end = end.checked_add(u64::from(pair[0]))?;
        let delta = pair[1] as i8;
        if delta != -128 {
            line = line.checked_add(i64::from(delta))?;
        }
        if end > byte_offset {
            return (delta != -128).then_some(line);
        }
    }
    None
}

/// Location entry kinds (bits 3-6 of the header byte) that carry a line delta.
const KIND_ONE_LINE0: u8 = 10;
const KIND_ONE_LINE2: u8 = 12;
const KIND_NO_COLUMNS: u8 = 13;
const KIND_LONG: u8 = 14;
const KIND_NONE: u8 = 15;

/// 3.11+: the line of the entry whose range holds the offset; entries of kind "none"
/// have no line. Offsets past the last entry have no line.
fn locations_line(table: &[u8], first_line: i32, byte_offset: u64) -> Option<i64> {
    let mut line = i64::from(first_line);
    let mut end: u64 = 0;
    let mut rest = table;
    while let Some((&header, after)) = rest.split_first() {
        if header & 0x80 == 0 {
            return None;
        }
        let body_len = after.iter().take_while(|&&b| b & 0x80 == 0).count();
        let (body, next) = after.split_at(body_len);
        let kind = (header >> 3) & 0x0f;
        line = line.checked_add(line_delta(kind, body)?)?;
        end = end.checked_add(2 * (u64::from(header & 0x07) + 1))?;
        if end > byte_offset {
            return (kind != KIND_NONE).then_some(line);
        }
        rest = next;
    }
    None
}

/// How far a location entry of `kind` moves the line; `body` is the entry after its
/// header byte.
fn line_delta(kind: u8, body: &[u8]) -> Option<i64> {
    match kind {
        KIND_ONE_LINE0..=KIND_ONE_LINE2 => Some(i64::from(kind - KIND_ONE_LINE0)),
        KIND_NO_COLUMNS | KIND_LONG => read_signed_varint(body),
        _ => Some(0),
    }
}

/// A varint: 6-bit chunks, least significant first, bit 6 set on all but the last.
fn read_varint(bytes: &[u8]) -> Option<u64> {
    let mut value: u64 = 0;
    for (i, &byte) in bytes.iter().enumerate() {
        let shift = 6 * u32::try_from(i).ok()?;
        if shift > 30 {
            return None;
        }
        value |= u64::from(byte & 0x3f) << shift;
        if byte & 0x40 == 0 {
            return Some(value);
        }
    }
    None
}

/// A signed varint: the magnitude shifted left by one, with the sign in bit 0.
fn read_signed_varint(bytes: &[u8]) -> Option<i64> {
    let raw = read_varint(bytes)?;
    let magnitude = i64::try_from(raw >> 1).ok()?;
    Some(if raw & 1 == 1 { -magnitude } else { magnitude })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;

    #[derive(Deserialize)]
    struct Fixture {
        version: String,
        codes: Vec<Code>,
    }

    #[derive(Deserialize)]
    struct Code {
        name: String,
        firstlineno: i32,
        table: String,
        lines: Vec<(u64, Option<u32>)>,
    }

    fn load(file: &str) -> Fixture {
        let path = format!("{}/fixtures/linetables/{file}", env!("CARGO_MANIFEST_DIR"));
        let text = std::fs::read_to_string(&path).expect("fixture exists");
        serde_json::from_str(&text).expect("fixture parses")
    }

    fn unhex(hex: &str) -> Vec<u8> {
        (0..hex.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&hex[i..i + 2], 16).expect("valid hex"))
            .collect()
    }

    /// Every offset of every code object in the fixture gives CPython's line.
    fn check(file: &str, format: LineTableFormat) {
        let fixture = load(file);
        let mut checked = 0;
        for code in &fixture.codes {
            let table = unhex(&code.table);
            for &(offset, expected) in &code.lines {
                let got = line_for_offset(format, &table, code.firstlineno, offset);
                assert_eq!(
                    got, expected,
                    "{} {} offset {offset}",
                    fixture.version, code.name
                );
                checked += 1;
            }
        }
        assert!(checked > 1000, "{file}: only {checked} offsets");
    }

    #[test]
    fn python38() {
        check("py38.json", LineTableFormat::Lnotab);
    }

    #[test]
    fn python39() {
        check("py39.json", LineTableFormat::Lnotab);
    }

    #[test]
    fn python310() {
        check("py310.json", LineTableFormat::Linetable310);
    }

    #[test]
    fn python311() {
        check("py311.json", LineTableFormat::Locations);
    }

    #[test]
    fn python312() {
        check("py312.json", LineTableFormat::Locations);
    }

    #[test]
    fn python313() {
        check("py313.json", LineTableFormat::Locations);
    }

    #[test]
    fn empty_tables() {
        assert_eq!(line_for_offset(LineTableFormat::Lnotab, &[], 7, 0), Some(7));
        assert_eq!(
            line_for_offset(LineTableFormat::Linetable310, &[], 7, 0),
            None
        );
        assert_eq!(line_for_offset(LineTableFormat::Locations, &[], 7, 0), None);
    }

    #[test]
    fn malformed_locations() {
        // Starts with a byte that is not an entry header.
        assert_eq!(
            line_for_offset(LineTableFormat::Locations, &[0x01], 1, 0),
            None
        );
        // A long-form entry whose line delta varint never ends.
        let table = [0x80 | (14 << 3), 0x41, 0x41];
        assert_eq!(
            line_for_offset(LineTableFormat::Locations, &table, 1, 0),
            None
        );
    }

    /// A deterministic xorshift64 stream.
    struct XorShift(u64);

    impl XorShift {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            self.0
        }
    }

    #[test]
    fn garbage_never_panics() {
        let formats = [
            LineTableFormat::Lnotab,
            LineTableFormat::Linetable310,
            LineTableFormat::Locations,
        ];
        let mut rng = XorShift(0x9e37_79b9_7f4a_7c15);
        for _ in 0..20_000 {
            let len = (rng.next() % 64) as usize;
            let table: Vec<u8> = (0..len).map(|_| rng.next() as u8).collect();
            let first_line = rng.next() as i32;
            let offset = match rng.next() % 3 {
                0 => rng.next(),
                1 => u64::MAX,
                _ => rng.next() % 512,
            };
            for format in formats {
                let _ = line_for_offset(format, &table, first_line, offset);
            }
        }
    }

    #[test]
    fn truncated_fixture_tables_never_panic() {
        let files = [
            ("py39.json", LineTableFormat::Lnotab),
            ("py310.json", LineTableFormat::Linetable310),
            ("py313.json", LineTableFormat::Locations),
        ];
        for (file, format) in files {
            for code in load(file).codes {
                let table = unhex(&code.table);
                for cut in 0..table.len() {
                    for &(offset, _) in code.lines.iter().step_by(41) {
                        let _ = line_for_offset(format, &table[..cut], code.firstlineno, offset);
                    }
                }
            }
        }
    }
}
