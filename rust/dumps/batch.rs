//! A container's items in batches, exactly as `_pickle.c` writes them: `MARK`, up to
//! `BATCHSIZE` items, then `APPENDS`, `SETITEMS` or `ADDITEMS`. The five ways it batches differ
//! only in when an item goes alone (`APPEND`, `SETITEM`) and whether a last batch that came out
//! full is followed by an empty one; [`Batching`] names each, [`Pickler::batched`] writes them.
//! CPython 3.15 changed both for lists and dicts: no empty last batch, and one item left after
//! full batches goes alone.

use pyo3::prelude::*;

use super::Pickler;
use crate::opcodes::{ADDITEMS, APPEND, APPENDS, MARK, SETITEM, SETITEMS};
use crate::writer::BATCHSIZE;

/// How one of `_pickle.c`'s batching functions writes a container's items.
#[derive(Clone, Copy)]
pub struct Batching {
    /// The opcode that closes a batch.
    batch_op: u8,
    lone: Lone,
    /// A last batch that came out full is followed by an empty `MARK batch_op` (before CPython
    /// 3.15, the loop of `batch_dict_exact` and `save_set` runs again while a batch came out
    /// full).
    empty_after_full: bool,
}

/// When one item is written with its own opcode rather than in a batch.
#[derive(Clone, Copy)]
enum Lone {
    Never,
    /// When the container holds exactly one item (`len` counted before writing); since CPython
    /// 3.15 also when one item is left after full batches.
    OnlyItem {
        op: u8,
        len: usize,
    },
    /// When a batch would start with its last item (an iterator, read one item ahead).
    LastItem {
        op: u8,
    },
}

impl Batching {
    /// `batch_list_exact`: a list of `len` items.
    pub fn list(len: usize) -> Batching {
        Batching {
            batch_op: APPENDS,
            lone: Lone::OnlyItem { op: APPEND, len },
            empty_after_full: false,
        }
    }

    /// `batch_dict_exact`: a dict of `len` items.
    pub fn dict(len: usize) -> Batching {
        Batching {
            batch_op: SETITEMS,
            lone: Lone::OnlyItem { op: SETITEM, len },
            empty_after_full: !cfg!(Py_3_15),
        }
    }

    /// `save_set`: a set's items.
    pub const SET: Batching = Batching {
        batch_op: ADDITEMS,
        lone: Lone::Never,
        empty_after_full: !cfg!(Py_3_15),
    };

    /// `batch_list`: the list items of a reduction, from an iterator.
    pub const LIST_ITEMS: Batching = Batching {
        batch_op: APPENDS,
        lone: Lone::LastItem { op: APPEND },
        empty_after_full: false,
    };

    /// `batch_dict`: the `(key, value)` items of a reduction, from an iterator.
    pub const DICT_ITEMS: Batching = Batching {
        batch_op: SETITEMS,
        lone: Lone::LastItem { op: SETITEM },
        empty_after_full: false,
    };
}

impl<'py> Pickler<'py> {
    /// Writes the items `next` hands out (`None` when there are no more) with `write`, batched
    /// as `how` says. Items are fetched in `_pickle.c`'s order: one at a time, right before
    /// each is written, except that an iterator's next item is fetched before a batch opens
    /// (it decides whether the batch is a lone item).
    #[inline(always)]
    pub fn batched<T>(
        &mut self,
        how: Batching,
        mut next: impl FnMut() -> PyResult<Option<T>>,
        mut write: impl FnMut(&mut Self, T) -> PyResult<()>,
    ) -> PyResult<()> {
        // The item read ahead at a batch's start (`Lone::LastItem`).
        let mut ahead: Option<T> = None;
        let mut fetch = |ahead: &mut Option<T>| match ahead.take() {
            Some(item) => Ok(Some(item)),
            None => next(),
        };
        let mut full_batches = false;
        // Items written so far, for a lone last item (`Lone::OnlyItem`).
        let mut written = 0;
        // One batch per turn; `write` is called in one place, so that it is inlined.
        while let Some(mut item) = fetch(&mut ahead)? {
            let first = written == 0;
            let lone = match how.lone {
                Lone::OnlyItem { op, len }
                    if written + 1 == len && (written == 0 || cfg!(Py_3_15)) =>
                {
                    Some(op)
                }
                Lone::LastItem { op } => {
                    ahead = fetch(&mut ahead)?;
                    ahead.is_none().then_some(op)
                }
                _ => None,
            };
            if lone.is_none() {
                self.out.op(MARK);
            }
            let mut n = 0;
            loop {
                write(self, item)?;
                n += 1;
                if lone.is_some() || n == BATCHSIZE {
                    break;
                }
                match fetch(&mut ahead)? {
                    Some(next_item) => item = next_item,
                    None => break,
                }
            }
            written += n;
            match lone {
                Some(op) => {
                    self.out.op(op);
                    // After full batches, a list that grew meanwhile still gets its new items
                    // (the next fetch normally finds none); an iterator is not asked again.
                    if first || matches!(how.lone, Lone::LastItem { .. }) {
                        return Ok(());
                    }
                    continue;
                }
                None => self.out.op(how.batch_op),
            }
            if n < BATCHSIZE {
                return Ok(());
            }
            full_batches = true;
        }
        if how.empty_after_full && full_batches {
            self.out.ops(&[MARK, how.batch_op]);
        }
        Ok(())
    }
}
