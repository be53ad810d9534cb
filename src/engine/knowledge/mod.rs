//! Knowledge: the user's documents made searchable. The chunker (`chunk`) cuts a document along its
//! structure within the embedding model's token budget; `store` keeps collections as Lance
//! datasets and searches them (vector, full text, hybrid); `ingest` brings files, folders and
//! globs into a collection, changing only what changed; `ground` puts retrieved chunks into a chat
//! message as numbered sources.

pub mod chunk;
pub mod ground;
pub mod ingest;
pub mod store;
