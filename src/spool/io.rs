//! The spool's file-access seam: every byte the spool reads or writes passes through
//! [`SpoolFile`], a redb `StorageBackend` over the real file.
//!
//! In production it only delegates. Tests hold a [`FaultSwitch`] and flip it to make every write,
//! resize and fsync fail with an I/O error, the way a full or dying disk does, without touching
//! the real file system; that is how "a disk failure answers 503 and loses no acknowledged event"
//! is tested (in the spirit of vector's disk buffer `Filesystem` trait). Reads keep working, as
//! they usually do on a disk that has run out of space.

use std::{
    fs::{File, OpenOptions},
    ops::Bound,
    path::Path,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
};

use redb::{BackendError, StorageBackend, backends::FileBackend};

/// redb's I/O error type of a backend.
type IoResult<T> = Result<T, std::io::Error>;

/// Makes every spool write fail while on. Cheap to clone; all clones share one switch.
#[derive(Debug, Clone, Default)]
pub struct FaultSwitch(Arc<AtomicBool>);

impl FaultSwitch {
    pub fn new() -> Self {
        Self::default()
    }

    /// Turns injected write failures on or off.
    pub fn fail_writes(&self, on: bool) {
        self.0.store(on, Ordering::SeqCst);
    }

    pub(crate) fn failing(&self) -> bool {
        self.0.load(Ordering::SeqCst)
    }
}

/// The spool's storage: the database file, behind an optional fault switch.
#[derive(Debug)]
pub struct SpoolFile {
    inner: FileBackend,
    faults: FaultSwitch,
}

impl SpoolFile {
    /// Opens (creating if needed) the spool file at `path`.
    pub fn open(path: &Path, faults: FaultSwitch) -> IoResult<Self> {
        let file: File = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(path)?;
        let inner = FileBackend::new(file).map_err(std::io::Error::other)?;
        Ok(Self { inner, faults })
    }

    fn check(&self) -> IoResult<()> {
        if self.faults.failing() {
            Err(std::io::Error::other("injected spool write failure"))
        } else {
            Ok(())
        }
    }
}

impl StorageBackend for SpoolFile {
    fn len(&self) -> IoResult<u64> {
        self.inner.len()
    }

    fn read(&self, offset: u64, out: &mut [u8]) -> IoResult<()> {
        self.inner.read(offset, out)
    }

    fn set_len(&self, len: u64) -> IoResult<()> {
        self.check()?;
        self.inner.set_len(len)
    }

    fn sync_data(&self) -> IoResult<()> {
        self.check()?;
        self.inner.sync_data()
    }

    fn write(&self, offset: u64, data: &[u8]) -> IoResult<()> {
        self.check()?;
        self.inner.write(offset, data)
    }

    fn close(&self) -> IoResult<()> {
        self.inner.close()
    }

    fn try_lock_range(&self, start: Bound<u64>, end: Bound<u64>) -> Result<bool, BackendError> {
        self.inner.try_lock_range(start, end)
    }

    fn try_lock_shared_range(
        &self,
        start: Bound<u64>,
        end: Bound<u64>,
    ) -> Result<bool, BackendError> {
        self.inner.try_lock_shared_range(start, end)
    }

    fn lock_range(&self, start: Bound<u64>, end: Bound<u64>) -> Result<(), BackendError> {
        self.inner.lock_range(start, end)
    }

    fn lock_shared_range(&self, start: Bound<u64>, end: Bound<u64>) -> Result<(), BackendError> {
        self.inner.lock_shared_range(start, end)
    }

    fn unlock_range(&self, start: Bound<u64>, end: Bound<u64>) -> Result<(), BackendError> {
        self.inner.unlock_range(start, end)
    }

    fn query_lock_range(&self, start: Bound<u64>, end: Bound<u64>) -> Result<bool, BackendError> {
        self.inner.query_lock_range(start, end)
    }
}
