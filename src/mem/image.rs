//! Memory images: a set of byte ranges at fixed addresses. A [`RecordingMemory`] captures
//! the pages a real read touches, so a walk of a live interpreter can be replayed in tests;
//! tests also build synthetic images by hand for interpreters that are not installed.

use super::{MemError, RemoteMemory};
use std::cell::RefCell;
use std::collections::BTreeMap;
use std::io::{self, Read, Write};

const MAGIC: &[u8; 8] = b"GSMEMIMG";
const PAGE: u64 = 4096;
/// Bounds on what a loaded image may claim, so a corrupt file cannot exhaust memory.
const MAX_REGIONS: u64 = 1 << 20;
const MAX_IMAGE_BYTES: u64 = 1 << 30;

/// Byte ranges keyed by start address; ranges never overlap (writes merge into pages).
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct MemoryImage {
    pages: BTreeMap<u64, Box<[u8]>>,
}

impl MemoryImage {
    pub fn new() -> Self {
        Self::default()
    }

    /// Places `bytes` at `addr`, creating zero-filled pages as needed.
    pub fn write(&mut self, addr: u64, bytes: &[u8]) {
        let mut done = 0usize;
        while done < bytes.len() {
            let at = addr + done as u64;
            let page = at & !(PAGE - 1);
            let within = (at - page) as usize;
            let n = (PAGE as usize - within).min(bytes.len() - done);
            let buf = self
                .pages
                .entry(page)
                .or_insert_with(|| vec![0u8; PAGE as usize].into_boxed_slice());
            buf[within..within + n].copy_from_slice(&bytes[done..done + n]);
            done += n;
        }
    }

    pub fn write_u64(&mut self, addr: u64, value: u64) {
        self.write(addr, &value.to_le_bytes());
    }

    pub fn write_u32(&mut self, addr: u64, value: u32) {
        self.write(addr, &value.to_le_bytes());
    }

    pub fn write_i32(&mut self, addr: u64, value: i32) {
        self.write(addr, &value.to_le_bytes());
    }

    pub fn page_count(&self) -> usize {
        self.pages.len()
    }

    pub fn save(&self, out: &mut impl Write) -> io::Result<()> {
        out.write_all(MAGIC)?;
        out.write_all(&(self.pages.len() as u64).to_le_bytes())?;
        for (addr, bytes) in &self.pages {
            out.write_all(&addr.to_le_bytes())?;
            out.write_all(bytes)?;
        }
        Ok(())
    }

    pub fn load(input: &mut impl Read) -> io::Result<Self> {
        let bad = |what: &str| io::Error::new(io::ErrorKind::InvalidData, what.to_string());
        let mut magic = [0u8; 8];
        input.read_exact(&mut magic)?;
        if &magic != MAGIC {
            return Err(bad("not a gilscope memory image"));
        }
        let count = read_u64(input)?;
        if count > MAX_REGIONS || count * PAGE > MAX_IMAGE_BYTES {
            return Err(bad("memory image too large"));
        }
        let mut image = MemoryImage::new();
        for _ in 0..count {
            let addr = read_u64(input)?;
            if addr % PAGE != 0 {
                return Err(bad("memory image page is not aligned"));
            }
            let mut page = vec![0u8; PAGE as usize].into_boxed_slice();
            input.read_exact(&mut page)?;
            image.pages.insert(addr, page);
        }
        Ok(image)
    }
}

fn read_u64(input: &mut impl Read) -> io::Result<u64> {
    let mut b = [0u8; 8];
    input.read_exact(&mut b)?;
    Ok(u64::from_le_bytes(b))
}

impl RemoteMemory for MemoryImage {
    fn read(&self, addr: u64, buf: &mut [u8]) -> Result<(), MemError> {
        let mut done = 0usize;
        while done < buf.len() {
            let at = addr
                .checked_add(done as u64)
                .ok_or(MemError::Fault { addr })?;
            let page = at & !(PAGE - 1);
            let bytes = self.pages.get(&page).ok_or(MemError::Fault { addr: at })?;
            let within = (at - page) as usize;
            let n = (PAGE as usize - within).min(buf.len() - done);
            buf[done..done + n].copy_from_slice(&bytes[within..within + n]);
            done += n;
        }
        Ok(())
    }
}

/// Wraps a live source and keeps a copy of every page a read touched.
pub struct RecordingMemory<M> {
    inner: M,
    image: RefCell<MemoryImage>,
}

impl<M: RemoteMemory> RecordingMemory<M> {
    pub fn new(inner: M) -> Self {
        RecordingMemory {
            inner,
            image: RefCell::new(MemoryImage::new()),
        }
    }

    pub fn into_image(self) -> MemoryImage {
        self.image.into_inner()
    }
}

impl<M: RemoteMemory> RemoteMemory for RecordingMemory<M> {
    fn read(&self, addr: u64, buf: &mut [u8]) -> Result<(), MemError> {
        self.inner.read(addr, buf)?;
        let first = addr & !(PAGE - 1);
        let end = addr + buf.len() as u64;
        let mut page = first;
        let mut copy = vec![0u8; PAGE as usize];
        while page < end {
            if !self.image.borrow().pages.contains_key(&page)
                && self.inner.read(page, &mut copy).is_ok()
            {
                self.image.borrow_mut().write(page, &copy);
            }
            page += PAGE;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mem::MemoryExt;

    #[test]
    fn reads_across_page_boundaries_and_faults_outside() {
        let mut image = MemoryImage::new();
        image.write(4090, &[1, 2, 3, 4, 5, 6, 7, 8, 9, 10]);
        let mut buf = [0u8; 10];
        image.read(4090, &mut buf).unwrap();
        assert_eq!(buf, [1, 2, 3, 4, 5, 6, 7, 8, 9, 10]);
        assert_eq!(
            image.read_u64(3 * PAGE),
            Err(MemError::Fault { addr: 3 * PAGE })
        );
    }

    #[test]
    fn save_and_load_round_trip() {
        let mut image = MemoryImage::new();
        image.write_u64(0x7f00_0000_1000, 0xdead_beef);
        let mut bytes = Vec::new();
        image.save(&mut bytes).unwrap();
        let loaded = MemoryImage::load(&mut bytes.as_slice()).unwrap();
        assert_eq!(loaded, image);
        assert_eq!(loaded.read_u64(0x7f00_0000_1000), Ok(0xdead_beef));
    }

    #[test]
    fn load_rejects_garbage() {
        assert!(MemoryImage::load(&mut &b"nonsense-and-more"[..]).is_err());
        let mut huge = MAGIC.to_vec();
        huge.extend_from_slice(&u64::MAX.to_le_bytes());
        assert!(MemoryImage::load(&mut huge.as_slice()).is_err());
    }
}
