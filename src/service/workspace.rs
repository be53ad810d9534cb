//! The workspace's records for headless callers (the server's routes, answering its clients):
//! datasets, read-only SQL, runs and their metrics, saved conversations. Each call blocks its
//! caller (never a UI thread) until the catalog answers, and returns a value; the workstation
//! asks the same things through the calls that answer with an event.

use std::time::Duration;

use super::{Service, ServiceError};
use crate::engine::data::chats::{ChatRecord, ChatSummary};
use crate::engine::data::import::DatasetInfo;
use crate::engine::data::readonly::Rows;
use crate::engine::data::runs::{MetricRow, RunRow};
use crate::engine::data::Catalog;

/// How long a call waits for the catalog (a long import may hold the worker's connection).
const WAIT: Duration = Duration::from_secs(30);

impl Service {
    fn cat(&self) -> Result<Catalog, ServiceError> {
        self.wait_catalog(WAIT)
    }

    pub fn datasets(&self) -> Result<Vec<DatasetInfo>, ServiceError> {
        Ok(self.cat()?.list()?)
    }

    /// One SELECT over the workspace's own tables and views (no files, no writes), at most
    /// `limit` rows, stopped after `timeout`.
    pub fn read_sql(&self, sql: &str, limit: usize, timeout: Duration) -> Result<Rows, ServiceError> {
        Ok(self.cat()?.read_only(sql, limit, timeout)?)
    }

    pub fn runs(&self) -> Result<Vec<RunRow>, ServiceError> {
        Ok(self.cat()?.runs()?)
    }

    pub fn run(&self, id: &str) -> Result<RunRow, ServiceError> {
        let cat = self.cat()?;
        if !cat.runs()?.iter().any(|r| r.id == id) {
            return Err(ServiceError::NotFound(format!("There is no run {id}; `lathe runs list` shows the runs.")));
        }
        Ok(cat.run(id)?)
    }

    pub fn metrics(&self, id: &str) -> Result<Vec<MetricRow>, ServiceError> {
        self.run(id)?;
        Ok(self.cat()?.metrics(id)?)
    }

    pub fn chats(&self) -> Result<Vec<ChatSummary>, ServiceError> {
        Ok(self.cat()?.chats()?)
    }

    pub fn chat(&self, id: &str) -> Result<ChatRecord, ServiceError> {
        let cat = self.cat()?;
        if !cat.chats()?.iter().any(|c| c.id == id) {
            return Err(ServiceError::NotFound(format!("There is no conversation {id}; `lathe chats list` shows them.")));
        }
        Ok(cat.chat(id)?)
    }
}
