//! Type layouts: how this Python (and the installed dask) lays out the objects the fast paths
//! handle, probed once per interpreter and checked against each type's own `__reduce__`.
//!
//! A layout says where a type's fields are and how to read them (and, where `loads` rebuilds
//! one natively, how to set them); it knows nothing about pickle streams. Both sides use it:
//! `dumps` writes a path, a partial or a dask node from its fields, `loads` builds POSIX paths
//! and restores `Task`s without calling back into Python.

pub mod partial;
pub mod path;
pub mod task_node;
