//! Fixed-size rows packed several per redb value (`u32` chunk number -> `per` rows, in row
//! order), the layout of the store's heads and tails tables: redb gives every value of more
//! than half a page a page of its own, so small rows are packed to fill pages.

use crate::error::{IndexError, Result};
use crate::seal::{seal, unseal};
use redb::{ReadableTable, Table};
use std::path::Path;

/// Appends rows at the end of a packed table, completing a partly filled last chunk first.
pub(crate) struct Writer {
    per: u32,
    row: usize,
    chunk: u32,
    buf: Vec<u8>,
    /// The table's name when its values are sealed (`None`: the unsealed format versions 1-2).
    sealed: Option<&'static str>,
}

impl Writer {
    /// A writer whose next row is row number `next` of `table` (which holds rows `0..next`).
    pub fn resume(
        table: &Table<u32, &[u8]>,
        next: u32,
        per: u32,
        row: usize,
        path: &Path,
        sealed: Option<&'static str>,
    ) -> Result<Writer> {
        let (chunk, held) = (next / per, (next % per) as usize);
        let mut buf = Vec::with_capacity(per as usize * row);
        if held > 0 && row > 0 {
            let guard = table.get(chunk)?;
            let raw = guard.as_ref().map(|v| v.value()).unwrap_or(&[]);
            let v = match sealed {
                Some(name) if !raw.is_empty() => unseal(path, name, &chunk.to_le_bytes(), raw)?,
                _ => raw,
            };
            if v.len() != held * row {
                return Err(IndexError::Corrupt {
                    path: path.to_path_buf(),
                    what: format!(
                        "chunk {chunk} holds {} bytes, {held} rows of {row} expected",
                        v.len()
                    ),
                });
            }
            buf.extend_from_slice(v);
        }
        Ok(Writer {
            per,
            row,
            chunk,
            buf,
            sealed,
        })
    }

    fn write(&self, table: &mut Table<u32, &[u8]>) -> Result<()> {
        match self.sealed {
            Some(name) => table.insert(
                self.chunk,
                seal(name, &self.chunk.to_le_bytes(), &self.buf).as_slice(),
            )?,
            None => table.insert(self.chunk, self.buf.as_slice())?,
        };
        Ok(())
    }

    /// Append one row (`row` bytes).
    pub fn push(&mut self, table: &mut Table<u32, &[u8]>, row: &[u8]) -> Result<()> {
        if self.row == 0 {
            return Ok(());
        }
        debug_assert_eq!(row.len(), self.row);
        self.buf.extend_from_slice(row);
        if self.buf.len() == self.per as usize * self.row {
            self.write(table)?;
            self.buf.clear();
            self.chunk += 1;
        }
        Ok(())
    }

    /// Write the partly filled last chunk, if any.
    pub fn finish(self, table: &mut Table<u32, &[u8]>) -> Result<()> {
        if !self.buf.is_empty() {
            self.write(table)?;
        }
        Ok(())
    }
}

/// Reads the rows of a packed table in order, checking that no chunk is missing or short.
pub(crate) struct Reader<'a> {
    chunks: Box<dyn Iterator<Item = Result<(u32, Vec<u8>)>> + 'a>,
    row: usize,
    per: u32,
    cur: Vec<u8>,
    pos: usize,
    next_chunk: u32,
    name: &'static str,
}

impl<'a> Reader<'a> {
    /// Rows of `table` (named `name` in errors) from row 0 on.
    pub fn new<T: ReadableTable<u32, &'static [u8]>>(
        table: &'a T,
        per: u32,
        row: usize,
        name: &'static str,
        sealed: Option<(&'a Path, &'static str)>,
    ) -> Result<Reader<'a>> {
        let chunks = table.iter()?.map(move |r| {
            let (k, v) = r?;
            let c = k.value();
            Ok(match sealed {
                Some((path, table)) => (
                    c,
                    unseal(path, table, &c.to_le_bytes(), v.value())?.to_vec(),
                ),
                None => (c, v.value().to_vec()),
            })
        });
        Ok(Reader {
            chunks: Box::new(chunks),
            row,
            per,
            cur: Vec::new(),
            pos: 0,
            next_chunk: 0,
            name,
        })
    }

    /// Append the next `n` rows to `out`; an error names the first chunk that is missing or
    /// shorter than its rows.
    pub fn take(&mut self, mut n: usize, out: &mut Vec<u8>, path: &Path) -> Result<()> {
        if self.row == 0 {
            return Ok(());
        }
        while n > 0 {
            if self.pos == self.cur.len() {
                let corrupt = |what: String| IndexError::Corrupt {
                    path: path.to_path_buf(),
                    what,
                };
                let want = self.next_chunk;
                let Some(r) = self.chunks.next() else {
                    return Err(corrupt(format!("{} chunk {want} missing", self.name)));
                };
                if want > 0 && self.cur.len() != self.per as usize * self.row {
                    return Err(corrupt(format!(
                        "{} chunk {} is short and not the last",
                        self.name,
                        want - 1
                    )));
                }
                let (c, v) = r?;
                if c != want {
                    return Err(corrupt(format!("{} chunk {want} missing", self.name)));
                }
                if v.is_empty() || v.len() % self.row != 0 || v.len() > self.per as usize * self.row
                {
                    return Err(corrupt(format!(
                        "{} chunk {want} has {} bytes (rows of {})",
                        self.name,
                        v.len(),
                        self.row
                    )));
                }
                self.next_chunk += 1;
                self.cur = v;
                self.pos = 0;
            }
            let rows = ((self.cur.len() - self.pos) / self.row).min(n);
            out.extend_from_slice(&self.cur[self.pos..self.pos + rows * self.row]);
            self.pos += rows * self.row;
            n -= rows;
        }
        Ok(())
    }
}

/// Row `n` of a sealed packed table (named `name`), or None when its chunk is absent or too
/// short.
pub(crate) fn get<T: ReadableTable<u32, &'static [u8]>>(
    table: &T,
    n: u32,
    per: u32,
    row: usize,
    path: &Path,
    name: &'static str,
) -> Result<Option<Vec<u8>>> {
    if row == 0 {
        return Ok(Some(Vec::new()));
    }
    let i = (n % per) as usize;
    let c = n / per;
    let Some(v) = table.get(c)? else {
        return Ok(None);
    };
    let v = unseal(path, name, &c.to_le_bytes(), v.value())?;
    Ok(v.get(i * row..(i + 1) * row).map(<[u8]>::to_vec))
}

#[cfg(test)]
mod tests {
    use super::*;
    use redb::{
        backends::InMemoryBackend, Database, ReadableDatabase, ReadableTableMetadata,
        TableDefinition,
    };

    const T: TableDefinition<u32, &[u8]> = TableDefinition::new("t");

    fn row(i: u32) -> [u8; 3] {
        [i as u8, (i >> 8) as u8, 0xab]
    }

    #[test]
    fn rows_append_across_commits_and_read_back_in_order() {
        let db = Database::builder()
            .create_with_backend(InMemoryBackend::new())
            .unwrap();
        let path = Path::new("mem");
        // 4 rows per chunk; commits of 3, 6 and 1 rows: the writer completes partial chunks.
        let mut next = 0u32;
        for n in [3u32, 6, 1] {
            let txn = db.begin_write().unwrap();
            {
                let mut t = txn.open_table(T).unwrap();
                let mut w = Writer::resume(&t, next, 4, 3, path, Some("t")).unwrap();
                for i in next..next + n {
                    w.push(&mut t, &row(i)).unwrap();
                }
                w.finish(&mut t).unwrap();
            }
            txn.commit().unwrap();
            next += n;
        }
        let txn = db.begin_read().unwrap();
        let t = txn.open_table(T).unwrap();
        assert_eq!(t.len().unwrap(), 3, "10 rows in chunks of 4");
        let mut r = Reader::new(&t, 4, 3, "t", Some((path, "t"))).unwrap();
        let mut out = Vec::new();
        r.take(7, &mut out, path).unwrap();
        r.take(3, &mut out, path).unwrap();
        let want: Vec<u8> = (0..10).flat_map(row).collect();
        assert_eq!(out, want);
        // One more row than stored: the error names the missing chunk.
        let e = r.take(1, &mut out, path).unwrap_err().to_string();
        assert!(e.contains("t chunk 3 missing"), "{e}");
        for i in [0, 5, 9] {
            assert_eq!(get(&t, i, 4, 3, path, "t").unwrap().unwrap(), row(i));
        }
        assert_eq!(get(&t, 10, 4, 3, path, "t").unwrap(), None);
        // Rows of no bytes need no table rows at all.
        let mut empty = Reader::new(&t, 4, 0, "t", Some((path, "t"))).unwrap();
        empty.take(100, &mut out, path).unwrap();
        assert_eq!(get(&t, 123, 4, 0, path, "t").unwrap(), Some(Vec::new()));
    }

    #[test]
    fn a_short_chunk_before_the_last_is_corrupt() {
        let db = Database::builder()
            .create_with_backend(InMemoryBackend::new())
            .unwrap();
        let txn = db.begin_write().unwrap();
        {
            let mut t = txn.open_table(T).unwrap();
            t.insert(0, [1u8, 2, 3].as_slice()).unwrap();
            t.insert(1, [4u8, 5, 6].as_slice()).unwrap();
            t.insert(2, [7u8, 8].as_slice()).unwrap();
        }
        txn.commit().unwrap();
        let txn = db.begin_read().unwrap();
        let t = txn.open_table(T).unwrap();
        let path = Path::new("mem");
        let mut out = Vec::new();
        let e = Reader::new(&t, 2, 3, "t", None)
            .unwrap()
            .take(2, &mut out, path)
            .unwrap_err();
        assert!(
            e.to_string().contains("chunk 0 is short and not the last"),
            "{e}"
        );
        let e = Reader::new(&t, 1, 3, "t", None)
            .unwrap()
            .take(3, &mut out, path)
            .unwrap_err();
        assert!(e.to_string().contains("chunk 2 has 2 bytes"), "{e}");
        // Resuming after a chunk of the wrong length refuses to append.
        let txn = db.begin_write().unwrap();
        let t = txn.open_table(T).unwrap();
        assert!(Writer::resume(&t, 5, 3, 3, path, None).is_err());
    }
}
