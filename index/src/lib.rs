//! # jsearch-index
//!
//! A vector store in **one redb file**: settings (format version, model identity, dimensions, graph
//! parameters), item records (id + opaque metadata), the full-dimension vectors (f16, as the
//! graph's head with its norm and the tail apart, packed several per redb value so that a tail
//! read is one 4 KiB page), an HNSW graph over the Matryoshka-truncated, re-normalised f16 heads
//! (node records persisted in the same transaction as the vectors they cover), and caller-owned
//! key-value namespaces. It never runs a model: it takes vectors and ids.
//!
//! Search = graph over the truncated vectors → its beam scored by in-memory sketches (head norm +
//! 4-bit tail, `sketch`) → at most `k'` exact re-ranks at full dimension from the file, skipping
//! those that cannot reach the top k → top-k. An exact, parallel brute-force search serves small
//! stores and ground truth.
//!
//! ```no_run
//! use jsearch_index::{Batch, SearchParams, Store, StoreSettings};
//! # fn main() -> jsearch_index::Result<()> {
//! let mut store = Store::open("my.redb".as_ref(), StoreSettings::new("toy", "abc123", 128))?;
//! let mut b = Batch::new();
//! b.upsert(1, vec![0.5; 128], b"meta".to_vec());
//! b.kv_put("paths", b"/a.jpg".to_vec(), 1u64.to_le_bytes().to_vec());
//! store.commit(b)?;
//! let hits = store.search(&vec![0.5; 128], 10, &SearchParams::default())?;
//! assert_eq!(hits[0].id, 1);
//! # Ok(()) }
//! ```

//!
//! | module | holds |
//! |---|---|
//! | `store` | [`Store`]: the file format (`store/schema.rs`), open + upgrade, in-memory state, writes, search |
//! | `graph` | the HNSW graph over f16 vectors (build, walk, node encoding, locality order) |
//! | `sketch` | the re-rank sketches and their error margin |
//! | `packed` | rows packed several per redb value (heads, tails) |
//! | `settings` | [`StoreSettings`] and the heads/tails layout |
//! | [`vecmath`] | f16 conversion and SIMD dot products |

mod error;
mod graph;
mod hugepages;
mod packed;
mod seal;
mod settings;
mod sketch;
mod store;
pub mod vecmath;

pub use error::{IndexError, Result};
pub use settings::{default_ann_dim, HnswParams, StoreSettings};
pub use store::{
    default_candidates, Batch, CheckReport, Hit, RepairReport, SearchParams, Store, StoreStats,
    EXACT_SEARCH_BELOW, FORMAT_VERSION,
};

/// The in-memory graph on its own, for the `ann` bench's comparison with other graph
/// implementations. Not part of the stable API.
#[doc(hidden)]
pub mod bench {
    pub use crate::graph::{AnnGraph, GraphParams, Hnsw};
}
