//! The per-type writers the walker dispatches to, one file per kind of object.

pub mod atoms;
pub mod buffer;
pub mod by_value;
pub mod code;
pub mod containers;
pub mod global;
pub mod partial;
pub mod path;
pub mod reduce;
pub mod task_node;
