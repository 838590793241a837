//! Reading a store that a killed writer left needing recovery, without writing to it: redb's
//! recovery runs against this backend, which reads the file and keeps every page recovery writes
//! in memory. Readers of such a store (also on a read-only file, a full disk, or while another
//! process holds the writer lock) then see its last commit; the file is left as it was, for the
//! next writer to recover for real.

use std::collections::HashMap;
use std::fs::File;
use std::io;
use std::sync::Mutex;

use redb::StorageBackend;

const PAGE: u64 = 4096;

/// The file below, and the pages written on top of it (in memory only).
#[derive(Debug)]
pub(super) struct Overlay {
    file: File,
    file_len: u64,
    state: Mutex<OverlayState>,
}

#[derive(Debug)]
struct OverlayState {
    len: u64,
    pages: HashMap<u64, Vec<u8>>,
}

impl Overlay {
    pub(super) fn new(file: File) -> io::Result<Overlay> {
        let file_len = file.metadata()?.len();
        Ok(Overlay {
            file,
            file_len,
            state: Mutex::new(OverlayState {
                len: file_len,
                pages: HashMap::new(),
            }),
        })
    }

    /// Bytes `offset..offset + out.len()` of the file itself (zeros past its end).
    fn read_file(&self, offset: u64, out: &mut [u8]) -> io::Result<()> {
        out.fill(0);
        if offset >= self.file_len {
            return Ok(());
        }
        let n = ((self.file_len - offset) as usize).min(out.len());
        read_exact_at(&self.file, &mut out[..n], offset)
    }
}

#[cfg(unix)]
fn read_exact_at(f: &File, out: &mut [u8], offset: u64) -> io::Result<()> {
    use std::os::unix::fs::FileExt;
    f.read_exact_at(out, offset)
}

#[cfg(windows)]
fn read_exact_at(f: &File, mut out: &mut [u8], mut offset: u64) -> io::Result<()> {
    use std::os::windows::fs::FileExt;
    while !out.is_empty() {
        match f.seek_read(out, offset)? {
            0 => return Err(io::ErrorKind::UnexpectedEof.into()),
            n => {
                out = &mut out[n..];
                offset += n as u64;
            }
        }
    }
    Ok(())
}

impl StorageBackend for Overlay {
    fn len(&self) -> io::Result<u64> {
        Ok(self.state.lock().unwrap_or_else(|e| e.into_inner()).len)
    }

    fn read(&self, mut offset: u64, mut out: &mut [u8]) -> io::Result<()> {
        let st = self.state.lock().unwrap_or_else(|e| e.into_inner());
        if offset + out.len() as u64 > st.len {
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
        while !out.is_empty() {
            let page = offset / PAGE;
            let within = (offset % PAGE) as usize;
            let n = (PAGE as usize - within).min(out.len());
            let (head, rest) = out.split_at_mut(n);
            match st.pages.get(&page) {
                Some(p) => head.copy_from_slice(&p[within..within + n]),
                None => self.read_file(offset, head)?,
            }
            out = rest;
            offset += n as u64;
        }
        Ok(())
    }

    fn set_len(&self, len: u64) -> io::Result<()> {
        let mut st = self.state.lock().unwrap_or_else(|e| e.into_inner());
        if len < st.len {
            // Bytes past the new end read as zeros if the file grows again.
            let first_gone = len / PAGE;
            let keep = (len % PAGE) as usize;
            st.pages.retain(|&p, _| p <= first_gone);
            if keep > 0 || len < self.file_len {
                let mut page = match st.pages.remove(&first_gone) {
                    Some(p) => p,
                    None => {
                        let mut p = vec![0u8; PAGE as usize];
                        self.read_file(first_gone * PAGE, &mut p)?;
                        p
                    }
                };
                page[keep..].fill(0);
                st.pages.insert(first_gone, page);
                // Whole file pages past the end must read as zeros too.
                let file_pages = self.file_len.div_ceil(PAGE);
                for p in first_gone + 1..file_pages {
                    st.pages.insert(p, vec![0u8; PAGE as usize]);
                }
            }
        }
        st.len = len;
        Ok(())
    }

    fn sync_data(&self) -> io::Result<()> {
        Ok(())
    }

    fn write(&self, mut offset: u64, mut data: &[u8]) -> io::Result<()> {
        let mut st = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let end = offset + data.len() as u64;
        if end > st.len {
            st.len = end;
        }
        while !data.is_empty() {
            let page = offset / PAGE;
            let within = (offset % PAGE) as usize;
            let n = (PAGE as usize - within).min(data.len());
            let p = match st.pages.entry(page) {
                std::collections::hash_map::Entry::Occupied(e) => e.into_mut(),
                std::collections::hash_map::Entry::Vacant(e) => {
                    let mut p = vec![0u8; PAGE as usize];
                    self.read_file(page * PAGE, &mut p)?;
                    e.insert(p)
                }
            };
            p[within..within + n].copy_from_slice(&data[..n]);
            data = &data[n..];
            offset += n as u64;
        }
        Ok(())
    }
}
