//! Container logs: the shim writes each line of the container's stdout and stderr to a
//! per-container file in Docker's json-file format (one JSON object per line, with stream and
//! RFC 3339 time), rotated by size; the daemon reads them back for `logs`, following the live
//! file across rotations.
//!
//! Lines longer than 16 KiB are split, as Docker does, so one runaway line cannot make a record
//! unbounded.

use std::fs::{self, File, OpenOptions};
use std::io::{self, BufRead, BufReader, Seek, SeekFrom, Write};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use serde::{Deserialize, Serialize};
use shoal_proto::{LogEntry, log_entry};

/// Longest record; longer lines are split.
pub const MAX_LINE: usize = 16 * 1024;
/// Defaults of a container's log rotation.
pub const DEFAULT_MAX_SIZE: u64 = 10 * 1024 * 1024;
pub const DEFAULT_MAX_FILES: u32 = 3;

/// One line on disk, as Docker's json-file driver writes it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Record {
    pub log: String,
    pub stream: String,
    pub time: String,
}

impl Record {
    pub fn to_entry(&self) -> LogEntry {
        LogEntry {
            stream: if self.stream == "stderr" {
                log_entry::Stream::Stderr as i32
            } else {
                log_entry::Stream::Stdout as i32
            },
            time: super::time::parse_rfc3339(&self.time),
            line: self.log.clone().into_bytes(),
        }
    }
}

/// Splits a byte stream into lines (keeping the newline), cutting at MAX_LINE.
#[derive(Default)]
pub struct LineSplitter {
    buf: Vec<u8>,
}

impl LineSplitter {
    /// Adds bytes; returns the complete lines now available.
    pub fn push(&mut self, data: &[u8]) -> Vec<Vec<u8>> {
        self.buf.extend_from_slice(data);
        let mut out = Vec::new();
        loop {
            match self.buf.iter().position(|b| *b == b'\n') {
                Some(i) if i < MAX_LINE => out.push(self.buf.drain(..=i).collect()),
                _ if self.buf.len() >= MAX_LINE => out.push(self.buf.drain(..MAX_LINE).collect()),
                _ => break,
            }
        }
        out
    }

    /// What is left when the stream ends (a last line without newline).
    pub fn finish(&mut self) -> Option<Vec<u8>> {
        (!self.buf.is_empty()).then(|| std::mem::take(&mut self.buf))
    }
}

/// Appends records to a log file, rotating it when it would pass `max_size`.
pub struct LogWriter {
    path: PathBuf,
    file: io::BufWriter<File>,
    size: u64,
    max_size: u64,
    max_files: u32,
}

impl LogWriter {
    pub fn open(path: &Path, max_size: u64, max_files: u32) -> io::Result<LogWriter> {
        let file = OpenOptions::new().create(true).append(true).open(path)?;
        let size = file.metadata()?.len();
        Ok(LogWriter {
            path: path.to_path_buf(),
            file: io::BufWriter::new(file),
            size,
            max_size: max_size.max(1024),
            max_files: max_files.max(1),
        })
    }

    /// Writes one line of `stream` ("stdout" or "stderr") read at `time`.
    pub fn write(&mut self, stream: &str, line: &[u8], time: SystemTime) -> io::Result<()> {
        let record = Record {
            log: String::from_utf8_lossy(line).into_owned(),
            stream: stream.to_string(),
            time: super::time::format_rfc3339(time),
        };
        let mut json = serde_json::to_vec(&record).map_err(io::Error::other)?;
        json.push(b'\n');
        if self.size > 0 && self.size + json.len() as u64 > self.max_size {
            self.rotate()?;
        }
        self.file.write_all(&json)?;
        self.size += json.len() as u64;
        Ok(())
    }

    pub fn flush(&mut self) -> io::Result<()> {
        self.file.flush()
    }

    /// log -> log.1 -> ... -> log.(max_files-1); the oldest falls off.
    fn rotate(&mut self) -> io::Result<()> {
        self.file.flush()?;
        if self.max_files > 1 {
            for n in (1..self.max_files - 1).rev() {
                let _ = fs::rename(rotated(&self.path, n), rotated(&self.path, n + 1));
            }
            fs::rename(&self.path, rotated(&self.path, 1))?;
        }
        let file = OpenOptions::new()
            .create(true)
            .write(true)
            .truncate(true)
            .open(&self.path)?;
        self.file = io::BufWriter::new(file);
        self.size = 0;
        Ok(())
    }
}

/// `container.log.N`.
pub fn rotated(path: &Path, n: u32) -> PathBuf {
    let mut s = path.as_os_str().to_owned();
    s.push(format!(".{n}"));
    PathBuf::from(s)
}

/// Every record, oldest first, across rotated files; and where the live file ends.
pub fn read_all(path: &Path, max_files: u32) -> (Vec<Record>, Option<Position>) {
    let mut out = Vec::new();
    for n in (1..max_files.max(1)).rev() {
        if let Ok(f) = File::open(rotated(path, n)) {
            out.extend(parse(BufReader::new(f)));
        }
    }
    let mut pos = None;
    if let Ok(mut f) = File::open(path) {
        let mut reader = BufReader::new(&mut f);
        let mut consumed = 0u64;
        let mut line = String::new();
        while let Ok(n) = reader.read_line(&mut line) {
            // A partial last line is left for the follower to read once complete.
            if n == 0 || !line.ends_with('\n') {
                break;
            }
            consumed += n as u64;
            if let Ok(r) = serde_json::from_str(&line) {
                out.push(r);
            }
            line.clear();
        }
        if let Ok(meta) = f.metadata() {
            pos = Some(Position {
                inode: meta.ino(),
                offset: consumed,
            });
        }
    }
    (out, pos)
}

fn parse(reader: impl BufRead) -> Vec<Record> {
    reader
        .lines()
        .map_while(Result::ok)
        .filter_map(|l| serde_json::from_str(&l).ok())
        .collect()
}

/// Where a follower stands in the live file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Position {
    pub inode: u64,
    pub offset: u64,
}

/// Reads what was appended since `pos`; after a rotation, the rest of the old file (now .1)
/// and then the new file from its start.
pub fn read_new(path: &Path, pos: &mut Option<Position>) -> Vec<Record> {
    let mut out = Vec::new();
    let current = fs::metadata(path).ok().map(|m| m.ino());
    if let Some(p) = pos.as_mut()
        && current != Some(p.inode)
    {
        // Rotated: finish the old file, which now has the .1 name.
        let old = rotated(path, 1);
        if fs::metadata(&old).map(|m| m.ino()).ok() == Some(p.inode) {
            out.extend(read_from(&old, p));
        }
        *pos = None;
    }
    let p = pos.get_or_insert(Position {
        inode: current.unwrap_or(0),
        offset: 0,
    });
    if current.is_some() {
        out.extend(read_from(path, p));
    }
    out
}

fn read_from(path: &Path, pos: &mut Position) -> Vec<Record> {
    let mut out = Vec::new();
    let Ok(mut f) = File::open(path) else {
        return out;
    };
    if f.seek(SeekFrom::Start(pos.offset)).is_err() {
        return out;
    }
    let mut reader = BufReader::new(f);
    let mut line = String::new();
    while let Ok(n) = reader.read_line(&mut line) {
        if n == 0 || !line.ends_with('\n') {
            break;
        }
        pos.offset += n as u64;
        if let Ok(r) = serde_json::from_str(&line) {
            out.push(r);
        }
        line.clear();
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_lines_and_caps_their_length() {
        let mut s = LineSplitter::default();
        assert_eq!(s.push(b"a\nb"), vec![b"a\n".to_vec()]);
        assert_eq!(s.push(b"c\n"), vec![b"bc\n".to_vec()]);
        let long = vec![b'x'; MAX_LINE + 10];
        let lines = s.push(&long);
        assert_eq!(lines.len(), 1);
        assert_eq!(lines[0].len(), MAX_LINE);
        assert_eq!(s.finish().unwrap().len(), 10);
        assert!(s.finish().is_none());
    }

    #[test]
    fn rotates_by_size_and_reads_back_in_order_while_following() {
        let dir = std::env::temp_dir().join(format!("shoal-logs-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).unwrap();
        let path = dir.join("c.log");
        let mut w = LogWriter::open(&path, 1024, 3).unwrap();
        let t = SystemTime::UNIX_EPOCH;
        w.write("stdout", b"first\n", t).unwrap();
        w.flush().unwrap();
        let (seen, mut pos) = read_all(&path, 3);
        assert_eq!(seen.len(), 1);
        for i in 0..40 {
            w.write(
                if i % 2 == 0 { "stdout" } else { "stderr" },
                format!("line {i}\n").as_bytes(),
                t,
            )
            .unwrap();
        }
        w.flush().unwrap();
        assert!(rotated(&path, 1).exists() && rotated(&path, 2).exists());
        assert!(!rotated(&path, 3).exists());
        // Following from before the rotation still sees lines in order (those rotated past .2
        // are gone, as with Docker).
        let new = read_new(&path, &mut pos);
        let nums: Vec<usize> = new
            .iter()
            .filter_map(|r| r.log.trim().strip_prefix("line ")?.parse().ok())
            .collect();
        assert!(nums.windows(2).all(|w| w[1] == w[0] + 1), "{nums:?}");
        assert_eq!(*nums.last().unwrap(), 39);
        let (all, _) = read_all(&path, 3);
        assert_eq!(all.last().unwrap().log, "line 39\n");
        assert_eq!(
            all.last().unwrap().to_entry().stream,
            log_entry::Stream::Stderr as i32
        );
        fs::remove_dir_all(&dir).unwrap();
    }
}
