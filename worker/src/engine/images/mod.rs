//! Images: the content-addressed store, importing archives into it, and unpacking layers.
//! Split so the security-sensitive part (unpack: what an archive may write where) stays small
//! and is tested on its own.

pub mod digest;
pub mod import;
pub mod reference;
pub mod store;
pub mod unpack;

pub use import::{ImportOptions, ImportReport, import};
pub use reference::Reference;
pub use store::{ImageRecord, ImageStore};
