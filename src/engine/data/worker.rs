//! The catalog's owner thread for the TUI. DuckDB's connection is not shared: this thread opens
//! the workspace catalog (holding the writer lock for the session), answers requests in order and
//! reports plain-data events.

use std::sync::mpsc;
use std::thread;

use serde::{Deserialize, Serialize};

use super::{Catalog, DatasetInfo};
use crate::engine::workspace::Workspace;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum DataRequest {
    ListDatasets,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum DataEvent {
    /// The catalog is open; `seeded` names the demo datasets imported into a new workspace.
    Opened { seeded: Vec<String> },
    Datasets(Vec<DatasetInfo>),
    /// The catalog could not be opened; a sentence that says what to do.
    Unavailable(String),
    Failed(String),
}

/// Dropping it closes the catalog cleanly (the thread checkpoints and exits) before returning.
pub struct DataWorker {
    tx: Option<mpsc::Sender<DataRequest>>,
    handle: Option<thread::JoinHandle<()>>,
}

impl DataWorker {
    /// Opens the catalog on a new thread and lists the datasets once it is open.
    pub fn spawn<F>(ws: Workspace, emit: F) -> DataWorker
    where
        F: Fn(DataEvent) + Send + 'static,
    {
        let (tx, rx) = mpsc::channel::<DataRequest>();
        let handle = thread::Builder::new()
            .name("lathe-data".into())
            .spawn(move || {
                let cat = match Catalog::open(&ws.catalog_path()) {
                    Ok(c) => c,
                    Err(e) => return emit(DataEvent::Unavailable(e.to_string())),
                };
                match cat.seed_demo() {
                    Ok(seeded) => emit(DataEvent::Opened { seeded }),
                    Err(e) => emit(DataEvent::Failed(format!("The demo datasets could not be imported: {e}"))),
                }
                let list = |cat: &Catalog| match cat.list() {
                    Ok(l) => DataEvent::Datasets(l),
                    Err(e) => DataEvent::Failed(e.to_string()),
                };
                emit(list(&cat));
                for req in rx {
                    match req {
                        DataRequest::ListDatasets => emit(list(&cat)),
                    }
                }
            })
            .expect("spawn data thread");
        DataWorker { tx: Some(tx), handle: Some(handle) }
    }

    pub fn send(&self, req: DataRequest) {
        if let Some(tx) = &self.tx {
            let _ = tx.send(req);
        }
    }
}

impl Drop for DataWorker {
    fn drop(&mut self) {
        drop(self.tx.take());
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
    }
}
