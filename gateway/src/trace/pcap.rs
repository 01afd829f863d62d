//! A rotating pcap file (the classic format, link type RAW: each record an IP packet):
//! once the file passes its size limit it becomes `<name>.1`, the older ones move up to
//! `<name>.<files - 1>`, and the oldest goes. Wireshark and tshark read each file alone.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

/// LINKTYPE_RAW: records start with an IPv4 or IPv6 header.
const LINKTYPE_RAW: u32 = 101;
/// The pcap global header's size.
const FILE_HEADER: u64 = 24;

/// The pcap file being written, and its older siblings.
pub struct RotatingPcap {
    path: PathBuf,
    max_bytes: u64,
    files: u32,
    out: BufWriter<File>,
    written: u64,
}

/// `path` with `.n` appended.
fn numbered(path: &Path, n: u32) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(format!(".{n}"));
    PathBuf::from(name)
}

/// Moves `path` to `path.1`, `path.1` to `path.2`... keeping `files` in all.
fn shift(path: &Path, files: u32) -> std::io::Result<()> {
    for n in (1..files).rev() {
        let from = if n == 1 {
            path.to_path_buf()
        } else {
            numbered(path, n - 1)
        };
        if from.exists() {
            std::fs::rename(&from, numbered(path, n))?;
        }
    }
    if files == 1 {
        let _ = std::fs::remove_file(path);
    }
    Ok(())
}

/// Opens `path` for a new capture, with the pcap file header.
fn create(path: &Path) -> std::io::Result<BufWriter<File>> {
    let mut out = BufWriter::new(File::create(path)?);
    out.write_all(&0xa1b2_c3d4u32.to_le_bytes())?;
    out.write_all(&2u16.to_le_bytes())?;
    out.write_all(&4u16.to_le_bytes())?;
    out.write_all(&0i32.to_le_bytes())?; // GMT offset
    out.write_all(&0u32.to_le_bytes())?; // accuracy
    out.write_all(&65_535u32.to_le_bytes())?; // snaplen
    out.write_all(&LINKTYPE_RAW.to_le_bytes())?;
    Ok(out)
}

impl RotatingPcap {
    /// Starts writing `path`, keeping at most `files` files of about `max_bytes` each; a
    /// capture an earlier run left there becomes `<name>.1`.
    pub fn open(path: &Path, max_bytes: u64, files: u32) -> std::io::Result<RotatingPcap> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir)?;
        }
        let files = files.max(1);
        if path.exists() {
            shift(path, files)?;
        }
        Ok(RotatingPcap {
            path: path.to_path_buf(),
            max_bytes: max_bytes.max(FILE_HEADER + 1),
            files,
            out: create(path)?,
            written: FILE_HEADER,
        })
    }

    /// Moves the files up one and starts an empty one.
    fn rotate(&mut self) -> std::io::Result<()> {
        self.out.flush()?;
        shift(&self.path, self.files)?;
        self.out = create(&self.path)?;
        self.written = FILE_HEADER;
        Ok(())
    }

    /// Writes one packet seen at `at`; rotates first when it would pass the size limit.
    pub fn write(&mut self, at: SystemTime, packet: &[u8]) -> std::io::Result<()> {
        let record = 16 + packet.len() as u64;
        if self.written + record > self.max_bytes && self.written > FILE_HEADER {
            self.rotate()?;
        }
        let since = at.duration_since(UNIX_EPOCH).unwrap_or_default();
        let secs = u32::try_from(since.as_secs()).unwrap_or(u32::MAX);
        self.out.write_all(&secs.to_le_bytes())?;
        self.out.write_all(&since.subsec_micros().to_le_bytes())?;
        let length = (packet.len() as u32).to_le_bytes();
        self.out.write_all(&length)?;
        self.out.write_all(&length)?;
        self.out.write_all(packet)?;
        self.written += record;
        Ok(())
    }

    /// Pushes what is buffered to the file (readers see every packet so far).
    pub fn flush(&mut self) -> std::io::Result<()> {
        self.out.flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_full_file_rotates_and_the_oldest_goes() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sip.pcap");
        let mut pcap = RotatingPcap::open(&path, 24 + 2 * (16 + 100), 3).unwrap();
        for _ in 0..7 {
            pcap.write(SystemTime::now(), &[0x45; 100]).unwrap();
        }
        pcap.flush().unwrap();
        let size = |p: &Path| std::fs::metadata(p).map(|m| m.len()).unwrap_or(0);
        assert_eq!(size(&path), 24 + 116, "the seventh packet alone");
        assert_eq!(size(&numbered(&path, 1)), 24 + 2 * 116);
        assert_eq!(size(&numbered(&path, 2)), 24 + 2 * 116);
        assert!(!numbered(&path, 3).exists(), "three files at most");
        let header = std::fs::read(&path).unwrap();
        assert_eq!(header[..4], 0xa1b2_c3d4u32.to_le_bytes());
        assert_eq!(header[20..24], LINKTYPE_RAW.to_le_bytes());
    }
}
