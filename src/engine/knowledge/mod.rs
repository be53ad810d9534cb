//! Knowledge: the user's documents made searchable. So far the chunker (`chunk`), which cuts a
//! document along its structure within the embedding model's token budget; collections (Lance),
//! ingest and search build on it.

pub mod chunk;
