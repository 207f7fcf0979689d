//! Opening a replica's RocksDB database with its column families, synced writes, and the data
//! dir's identity (cluster name and node id) so a server refuses another cluster's data. It must
//! not interpret log entries or state.

use crate::error::RaftError;
use rocksdb::{ColumnFamily, ColumnFamilyDescriptor, Options, WriteOptions, DB};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Weak};

/// Column family holding log entries, keyed by big-endian index.
pub const CF_LOG: &str = "log";
/// Column family holding the vote, the last purged log id and the committed log id.
pub const CF_META: &str = "meta";
/// Column family holding the state machine's last snapshot and the data dir's identity.
pub const CF_SM: &str = "sm";

const KEY_IDENTITY: &[u8] = b"identity";

/// Who a data dir belongs to.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct DataDirIdentity {
    pub cluster: String,
    pub node_id: u64,
}

impl std::fmt::Display for DataDirIdentity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "node {} of cluster {:?}", self.node_id, self.cluster)
    }
}

/// A replica's open database, shared by the log store and the state machine.
#[derive(Clone)]
pub struct Db {
    inner: Arc<DB>,
    path: PathBuf,
}

impl Db {
    /// Opens (or creates) the database under `dir`.
    pub fn open(dir: &Path) -> Result<Db, RaftError> {
        let mut options = Options::default();
        options.create_if_missing(true);
        options.create_missing_column_families(true);
        options.set_paranoid_checks(true);
        let families = [CF_LOG, CF_META, CF_SM]
            .into_iter()
            .map(|name| ColumnFamilyDescriptor::new(name, Options::default()));
        let inner = DB::open_cf_descriptors(&options, dir, families).map_err(|e| {
            let detail = e.to_string();
            if detail.contains("lock") || detail.contains("LOCK") {
                RaftError::Db {
                    path: dir.to_path_buf(),
                    detail: format!(
                        "in use by another running replica or tool (lock held): {detail}"
                    ),
                }
            } else {
                RaftError::CorruptDataDir {
                    path: dir.to_path_buf(),
                    detail: format!("RocksDB cannot open it: {detail}"),
                }
            }
        })?;
        Ok(Db {
            inner: Arc::new(inner),
            path: dir.to_path_buf(),
        })
    }

    /// Opens the database and checks (or, on first use, records) who it belongs to.
    pub fn open_for(dir: &Path, identity: &DataDirIdentity) -> Result<Db, RaftError> {
        let db = Db::open(dir)?;
        match db.identity()? {
            Some(found) if &found == identity => {}
            Some(found) => {
                return Err(RaftError::ForeignDataDir {
                    path: dir.to_path_buf(),
                    found: found.to_string(),
                    expected: identity.to_string(),
                })
            }
            None => {
                let bytes = serde_json::to_vec(identity).map_err(|e| RaftError::Encode {
                    what: "data dir identity",
                    detail: e.to_string(),
                })?;
                db.put_synced(CF_SM, KEY_IDENTITY, &bytes)?;
            }
        }
        Ok(db)
    }

    /// The recorded identity, if any.
    pub fn identity(&self) -> Result<Option<DataDirIdentity>, RaftError> {
        match self.inner.get_cf(self.cf(CF_SM), KEY_IDENTITY)? {
            None => Ok(None),
            Some(bytes) => {
                serde_json::from_slice(&bytes)
                    .map(Some)
                    .map_err(|e| RaftError::CorruptDataDir {
                        path: self.path.clone(),
                        detail: format!("its identity record cannot be read: {e}"),
                    })
            }
        }
    }

    /// A handle that does not keep the database open.
    pub fn downgrade(&self) -> WeakDb {
        WeakDb {
            inner: Arc::downgrade(&self.inner),
            path: self.path.clone(),
        }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn raw(&self) -> &DB {
        &self.inner
    }

    /// A column family handle; the three families always exist once the database is open.
    pub fn cf(&self, name: &str) -> &ColumnFamily {
        self.inner
            .cf_handle(name)
            .expect("column families are created when the database opens")
    }

    /// Write options that make RocksDB fsync its WAL before the write returns.
    pub fn synced() -> WriteOptions {
        let mut options = WriteOptions::default();
        options.set_sync(true);
        options
    }

    /// Puts one key and syncs before returning.
    pub fn put_synced(&self, cf: &str, key: &[u8], value: &[u8]) -> Result<(), RaftError> {
        self.inner
            .put_cf_opt(self.cf(cf), key, value, &Db::synced())?;
        Ok(())
    }

    pub fn get(&self, cf: &str, key: &[u8]) -> Result<Option<Vec<u8>>, RaftError> {
        Ok(self.inner.get_cf(self.cf(cf), key)?)
    }
}

/// A `Db` handle that does not keep the database open (for background threads).
#[derive(Clone)]
pub struct WeakDb {
    inner: Weak<DB>,
    path: PathBuf,
}

impl WeakDb {
    /// The database, if it is still open.
    pub fn upgrade(&self) -> Option<Db> {
        self.inner.upgrade().map(|inner| Db {
            inner,
            path: self.path.clone(),
        })
    }
}
