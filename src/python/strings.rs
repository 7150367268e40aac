//! Reading `str` and `bytes` objects, bounded so a torn or hostile object cannot make
//! gilscope read or allocate much.

use super::layout::ObjectLayout;
use crate::mem::{MemError, MemoryExt, RemoteMemory};

/// Longer strings are cut: names and paths are never this long in practice.
pub const MAX_STRING_CHARS: u64 = 4096;
/// Line tables larger than this are not read (no real function has one).
pub const MAX_BYTES_LEN: u64 = 1 << 20;

const COMPACT_BIT: u32 = 1 << 3;
const ASCII_BIT: u32 = 1 << 4;

/// Reads a `str` object as UTF-8 (lossy for lone surrogates).
pub fn read_unicode(
    mem: &impl RemoteMemory,
    layout: &ObjectLayout,
    addr: u64,
) -> Result<String, MemError> {
    let mut text = String::new();
    read_unicode_into(mem, layout, addr, &mut Vec::new(), &mut text)?;
    Ok(text)
}

/// [`read_unicode`] into `text`, through `raw`: both are cleared first and keep their
/// capacity, so a reader that reuses them allocates nothing once they are large enough.
pub fn read_unicode_into(
    mem: &impl RemoteMemory,
    layout: &ObjectLayout,
    addr: u64,
    raw: &mut Vec<u8>,
    text: &mut String,
) -> Result<(), MemError> {
    text.clear();
    let state_at = addr.wrapping_add(layout.unicode_state);
    let state = mem.read_u32(state_at)? >> layout.unicode_kind_shift;
    let length = mem.read_i64(addr.wrapping_add(layout.unicode_length))?;
    let kind = state & 0b111;
    if state & COMPACT_BIT == 0 || !(0..=(1 << 31)).contains(&length) || !matches!(kind, 1 | 2 | 4)
    {
        // Legacy (non-compact) strings do not occur for code names and paths.
        return Err(MemError::Fault { addr });
    }
    let chars = (length as u64).min(MAX_STRING_CHARS);
    let data = if state & ASCII_BIT != 0 {
        layout.unicode_ascii_size
    } else {
        layout.unicode_compact_size
    };
    mem.read_into(
        addr.wrapping_add(data),
        (chars * u64::from(kind)) as usize,
        raw,
    )?;
    decode_into(raw, kind, text);
    Ok(())
}

fn decode_into(raw: &[u8], kind: u32, text: &mut String) {
    match kind {
        1 => text.extend(raw.iter().map(|&b| char::from(b))),
        2 => text.extend(
            char::decode_utf16(
                raw.chunks_exact(2)
                    .map(|c| u16::from_le_bytes([c[0], c[1]])),
            )
            .map(|c| c.unwrap_or('\u{fffd}')),
        ),
        _ => text.extend(raw.chunks_exact(4).map(|c| {
            char::from_u32(u32::from_le_bytes([c[0], c[1], c[2], c[3]])).unwrap_or('\u{fffd}')
        })),
    }
}

/// Reads a `bytes` object's contents.
pub fn read_bytes(
    mem: &impl RemoteMemory,
    layout: &ObjectLayout,
    addr: u64,
) -> Result<Vec<u8>, MemError> {
    let len = mem.read_i64(addr.wrapping_add(layout.bytes_size))?;
    if !(0..=MAX_BYTES_LEN as i64).contains(&len) {
        return Err(MemError::Fault { addr });
    }
    mem.read_vec(addr.wrapping_add(layout.bytes_data), len as usize)
}

/// Reads a NUL-terminated C string of at most `max` bytes.
pub fn read_c_string(mem: &impl RemoteMemory, addr: u64, max: usize) -> Result<String, MemError> {
    let mut out = Vec::new();
    let mut chunk = [0u8; 64];
    while out.len() < max {
        let at = addr.wrapping_add(out.len() as u64);
        // Never read across a page end the string may not reach.
        let to_page_end = (4096 - (at % 4096)) as usize;
        let chunk = &mut chunk[..to_page_end.min(64)];
        mem.read(at, chunk)?;
        match chunk.iter().position(|&b| b == 0) {
            Some(end) => {
                out.extend_from_slice(&chunk[..end]);
                break;
            }
            None => out.extend_from_slice(chunk),
        }
    }
    out.truncate(max);
    Ok(String::from_utf8_lossy(&out).into_owned())
}
