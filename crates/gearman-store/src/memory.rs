//! An in-process store (nothing survives a restart): the reference the conformance suite
//! is checked against, and a stand-in for server tests that need a store without a database.

use std::collections::BTreeMap;
use std::sync::Mutex;

use crate::{JobRecord, QueueStore, StoreError};

/// Keeps records in a map, in key order.
#[derive(Debug, Default)]
pub struct MemoryStore {
    // A std mutex, not tokio's: it is never held across an await.
    jobs: Mutex<BTreeMap<u64, JobRecord>>,
}

impl MemoryStore {
    /// An empty store.
    pub fn new() -> MemoryStore {
        MemoryStore::default()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<u64, JobRecord>> {
        // A panic elsewhere cannot leave the map half-updated: every update is one insert or remove.
        self.jobs.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

#[async_trait::async_trait]
impl QueueStore for MemoryStore {
    async fn add(&self, jobs: &[JobRecord]) -> Result<(), StoreError> {
        let mut map = self.lock();
        for job in jobs {
            map.insert(job.key, job.clone());
        }
        Ok(())
    }

    async fn remove(&self, keys: &[u64]) -> Result<(), StoreError> {
        let mut map = self.lock();
        for key in keys {
            map.remove(key);
        }
        Ok(())
    }

    async fn replay(&self) -> Result<Vec<JobRecord>, StoreError> {
        Ok(self.lock().values().cloned().collect())
    }

    fn name(&self) -> &'static str {
        "memory"
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[tokio::test]
    async fn passes_conformance() {
        crate::testkit::conformance(Arc::new(MemoryStore::new())).await;
    }
}
