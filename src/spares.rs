//! Per-thread stashes of spare objects (read buffers, splicers) that loans
//! take and give back: a transaction then allocates nothing for them, and
//! an idle client holds none. Each worker thread runs its own runtime, so a
//! thread-local stash needs no lock.

use std::cell::RefCell;

/// A bounded stack of spares; put it in a `thread_local!`.
pub struct Spares<T> {
    stack: RefCell<Vec<T>>,
    max: usize,
}

impl<T> Spares<T> {
    pub const fn new(max: usize) -> Self {
        Self {
            stack: RefCell::new(Vec::new()),
            max,
        }
    }

    pub fn take(&self) -> Option<T> {
        self.stack.borrow_mut().pop()
    }

    /// Keeps `item` if there is room; drops it otherwise.
    pub fn put(&self, item: T) {
        let mut stack = self.stack.borrow_mut();
        if stack.len() < self.max {
            stack.push(item);
        }
    }
}
