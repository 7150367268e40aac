//! Code objects, read once and kept: a frame names its code by a small [`CodeId`], and
//! names, files and line tables are read the first time a code object is seen.

use super::attach::Runtime;
use super::linetable::line_for_offset;
use super::strings::{read_bytes, read_unicode};
use super::walker::Frame;
use crate::mem::{Fields, MemError, MemoryExt, RemoteMemory};
use crate::model::python::FrameInfo;
use rustc_hash::FxHashMap;

pub type CodeId = u32;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CodeInfo {
    /// `co_name`.
    pub name: String,
    /// `co_qualname` (3.11+), e.g. "Worker.run".
    pub qualname: Option<String>,
    /// `co_filename`.
    pub file: String,
    pub first_line: i32,
    line_table: Vec<u8>,
    /// Free-threaded 3.14+: `co_tlbc`, the per-thread bytecode copies.
    tlbc: u64,
    /// 3.11+: bytes of bytecode (`Py_SIZE(code)` code units of 2 bytes); 0 when unknown.
    bytecode_len: u64,
}

/// Code objects seen so far, by address. A code object freed and another allocated at the
/// same address would be misnamed: code created and dropped at run time (exec, lambdas),
/// and the start-up code of an interpreter attached to while it starts. From 3.11 a frame
/// whose instruction lies outside its cached code's bytecode shows the entry is stale
/// ([`CodeTable::forget`]).
#[derive(Debug, Default)]
pub struct CodeTable {
    by_address: FxHashMap<u64, CodeId>,
    infos: Vec<CodeInfo>,
    lines: FxHashMap<(CodeId, u64), u32>,
}

impl CodeTable {
    pub fn info(&self, id: CodeId) -> &CodeInfo {
        &self.infos[id as usize]
    }

    /// `frame` with its code's names and file, as reports show it.
    pub fn frame_info(&self, frame: &Frame) -> FrameInfo {
        let info = self.info(frame.code);
        FrameInfo {
            function: info.name.clone(),
            qualname: info.qualname.clone(),
            file: info.file.clone(),
            line: frame.line,
        }
    }

    pub fn len(&self) -> usize {
        self.infos.len()
    }

    pub fn is_empty(&self) -> bool {
        self.infos.is_empty()
    }

    /// The id of the code object at `addr`, reading it if new; `None` if it is not a code
    /// object (shim frames, torn pointers).
    pub fn lookup(
        &mut self,
        mem: &impl RemoteMemory,
        runtime: &Runtime,
        addr: u64,
    ) -> Result<Option<CodeId>, MemError> {
        if let Some(&id) = self.by_address.get(&addr) {
            return Ok(Some(id));
        }
        let Some(info) = read_code(mem, runtime, addr)? else {
            return Ok(None);
        };
        let id = self.infos.len() as CodeId;
        self.infos.push(info);
        self.by_address.insert(addr, id);
        Ok(Some(id))
    }

    /// Forgets every code object's address (not the ids already handed out, which keep
    /// their names): each is read again when next seen.
    pub fn forget_addresses(&mut self) {
        self.by_address.clear();
    }

    /// Drops what is known of the code object at `addr` (freed, its address reused): the
    /// next lookup reads it again.
    pub fn forget(&mut self, addr: u64) {
        self.by_address.remove(&addr);
    }

    /// Whether `byte_offset` lies inside the code's bytecode (true when its length is not
    /// known).
    pub fn holds_offset(&self, code: CodeId, byte_offset: u64) -> bool {
        let len = self.info(code).bytecode_len;
        len == 0 || byte_offset < len
    }

    /// Where the bytecode that `instr_ptr`-style pointers point into begins.
    pub fn bytecode_start(
        &self,
        mem: &impl RemoteMemory,
        runtime: &Runtime,
        code: CodeId,
        code_addr: u64,
        tlbc_index: Option<i32>,
    ) -> Result<u64, MemError> {
        let info = self.info(code);
        let inline = code_addr.wrapping_add(runtime.layout.code.code_adaptive.unwrap_or(0));
        match tlbc_index {
            Some(index) if index > 0 && info.tlbc != 0 => {
                // _PyCodeArray { Py_ssize_t size; char *entries[]; }
                let size = mem.read_i64(info.tlbc)?;
                if i64::from(index) >= size {
                    return Ok(inline);
                }
                mem.read_u64(info.tlbc.wrapping_add(8 + 8 * index as u64))
            }
            _ => Ok(inline),
        }
    }

    /// The line of the instruction `byte_offset` bytes into the code (0 when unknown).
    pub fn line(&mut self, runtime: &Runtime, code: CodeId, byte_offset: u64) -> u32 {
        if let Some(&line) = self.lines.get(&(code, byte_offset)) {
            return line;
        }
        let info = &self.infos[code as usize];
        let format = runtime.layout.code.linetable_format;
        let line =
            line_for_offset(format, &info.line_table, info.first_line, byte_offset).unwrap_or(0);
        self.lines.insert((code, byte_offset), line);
        line
    }
}

fn read_code(
    mem: &impl RemoteMemory,
    runtime: &Runtime,
    addr: u64,
) -> Result<Option<CodeInfo>, MemError> {
    let layout = &runtime.layout;
    let c = &layout.code;
    let len = [
        c.filename,
        c.name,
        c.qualname.unwrap_or(0),
        c.firstlineno,
        c.linetable,
        c.tlbc.unwrap_or(0),
    ]
    .into_iter()
    .max()
    .unwrap_or(0)
        + 8;
    // `ob_size` (code units, 3.11+) follows the object header, which ends with `ob_type`.
    let ob_size = layout.object.ob_type + 8;
    let header = mem.read_vec(addr, len.max(ob_size + 8) as usize)?;
    let f = Fields::new(addr, &header);
    if let Some(code_type) = runtime.code_type
        && f.u64(layout.object.ob_type)? != code_type
    {
        return Ok(None);
    }
    let object = &layout.object;
    let qualname = match c.qualname {
        Some(off) => Some(read_unicode(mem, object, f.u64(off)?)?),
        None => None,
    };
    Ok(Some(CodeInfo {
        name: read_unicode(mem, object, f.u64(c.name)?)?,
        qualname,
        file: read_unicode(mem, object, f.u64(c.filename)?)?,
        first_line: f.i32(c.firstlineno)?,
        line_table: read_bytes(mem, object, f.u64(c.linetable)?)?,
        tlbc: c.tlbc.map(|off| f.u64(off)).transpose()?.unwrap_or(0),
        bytecode_len: match c.code_adaptive {
            Some(_) => u64::try_from(f.i64(ob_size)?)
                .unwrap_or(0)
                .saturating_mul(2),
            None => 0,
        },
    }))
}
