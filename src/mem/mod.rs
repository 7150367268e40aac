//! Reading another process's memory. Everything above this module sees only
//! [`RemoteMemory`], so a recorded or synthetic [`MemoryImage`] can stand in for a live
//! process in tests.

mod image;
mod live;

pub use image::{MemoryImage, RecordingMemory};
pub use live::{LiveMemory, MAX_PIECES_PER_CALL};

/// Why a read failed. `Fault` is what a torn or hostile structure produces; the others
/// end the session.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum MemError {
    #[error("address {addr:#x} is not readable")]
    Fault { addr: u64 },
    #[error("the process is gone")]
    ProcessGone,
    #[error("permission denied")]
    PermissionDenied,
}

/// One piece of a batched read: `len` bytes at `addr`, to land in `buf[at..at + len]` of
/// the buffer passed along with it. `ok` tells afterwards whether it was read whole.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Piece {
    pub addr: u64,
    pub at: usize,
    pub len: usize,
    pub ok: bool,
}

impl Piece {
    pub fn new(addr: u64, at: usize, len: usize) -> Self {
        Piece {
            addr,
            at,
            len,
            ok: false,
        }
    }

    /// The bytes of this piece in the buffer it was read into, if it was read whole.
    pub fn bytes<'a>(&self, buf: &'a [u8]) -> Option<&'a [u8]> {
        if !self.ok {
            return None;
        }
        buf.get(self.at..self.at.checked_add(self.len)?)
    }
}

/// A source of another process's memory.
pub trait RemoteMemory {
    /// Fills `buf` from the bytes at `addr`, or fails without a partial result.
    fn read(&self, addr: u64, buf: &mut [u8]) -> Result<(), MemError>;

    /// Reads many pieces into `buf` at once: a live process takes up to 1024 of them in
    /// one syscall. A piece that cannot be read whole (or does not fit in `buf`) is marked
    /// not `ok` and does not fail the others; only the process's end or a permission error
    /// fails the batch. This default reads piece by piece, so a recorded image answers
    /// exactly what the single reads would.
    fn read_pieces(&self, pieces: &mut [Piece], buf: &mut [u8]) -> Result<(), MemError> {
        for piece in pieces.iter_mut() {
            let end = piece.at.checked_add(piece.len);
            let Some(dest) = end.and_then(|end| buf.get_mut(piece.at..end)) else {
                piece.ok = false;
                continue;
            };
            piece.ok = match self.read(piece.addr, dest) {
                Ok(()) => true,
                Err(MemError::Fault { .. }) => false,
                Err(e) => return Err(e),
            };
        }
        Ok(())
    }
}

impl<T: RemoteMemory + ?Sized> RemoteMemory for &T {
    fn read(&self, addr: u64, buf: &mut [u8]) -> Result<(), MemError> {
        (**self).read(addr, buf)
    }
    fn read_pieces(&self, pieces: &mut [Piece], buf: &mut [u8]) -> Result<(), MemError> {
        (**self).read_pieces(pieces, buf)
    }
}

/// Typed reads on top of [`RemoteMemory`]; all values are little-endian (x86-64, aarch64).
pub trait MemoryExt: RemoteMemory {
    fn read_array<const N: usize>(&self, addr: u64) -> Result<[u8; N], MemError> {
        let mut buf = [0u8; N];
        self.read(addr, &mut buf)?;
        Ok(buf)
    }
    fn read_u8(&self, addr: u64) -> Result<u8, MemError> {
        Ok(self.read_array::<1>(addr)?[0])
    }
    fn read_u32(&self, addr: u64) -> Result<u32, MemError> {
        Ok(u32::from_le_bytes(self.read_array(addr)?))
    }
    fn read_i32(&self, addr: u64) -> Result<i32, MemError> {
        Ok(i32::from_le_bytes(self.read_array(addr)?))
    }
    fn read_u64(&self, addr: u64) -> Result<u64, MemError> {
        Ok(u64::from_le_bytes(self.read_array(addr)?))
    }
    fn read_i64(&self, addr: u64) -> Result<i64, MemError> {
        Ok(i64::from_le_bytes(self.read_array(addr)?))
    }
    fn read_vec(&self, addr: u64, len: usize) -> Result<Vec<u8>, MemError> {
        let mut buf = Vec::new();
        self.read_into(addr, len, &mut buf)?;
        Ok(buf)
    }
    /// `len` bytes at `addr` into `buf`, which is resized to them and keeps its capacity:
    /// a reader that reuses it allocates nothing once it is large enough.
    fn read_into(&self, addr: u64, len: usize, buf: &mut Vec<u8>) -> Result<(), MemError> {
        buf.clear();
        buf.resize(len, 0);
        self.read(addr, buf)
    }
}

impl<T: RemoteMemory + ?Sized> MemoryExt for T {}

/// Little-endian field access into a buffer read in one go. Out-of-range offsets read as
/// a fault at `base + offset`, so a bad layout can never panic.
#[derive(Clone, Copy)]
pub struct Fields<'a> {
    pub base: u64,
    pub bytes: &'a [u8],
}

impl<'a> Fields<'a> {
    pub fn new(base: u64, bytes: &'a [u8]) -> Self {
        Fields { base, bytes }
    }
    fn slice<const N: usize>(&self, offset: u64) -> Result<[u8; N], MemError> {
        let start = usize::try_from(offset).map_err(|_| self.fault(offset))?;
        let end = start.checked_add(N).ok_or_else(|| self.fault(offset))?;
        self.bytes
            .get(start..end)
            .map(|s| s.try_into().expect("slice length is N"))
            .ok_or_else(|| self.fault(offset))
    }
    fn fault(&self, offset: u64) -> MemError {
        MemError::Fault {
            addr: self.base.wrapping_add(offset),
        }
    }
    pub fn u8(&self, offset: u64) -> Result<u8, MemError> {
        Ok(self.slice::<1>(offset)?[0])
    }
    pub fn i32(&self, offset: u64) -> Result<i32, MemError> {
        Ok(i32::from_le_bytes(self.slice(offset)?))
    }
    pub fn u32(&self, offset: u64) -> Result<u32, MemError> {
        Ok(u32::from_le_bytes(self.slice(offset)?))
    }
    pub fn u64(&self, offset: u64) -> Result<u64, MemError> {
        Ok(u64::from_le_bytes(self.slice(offset)?))
    }
    pub fn i64(&self, offset: u64) -> Result<i64, MemError> {
        Ok(i64::from_le_bytes(self.slice(offset)?))
    }
}
