//! Maven pull-through tests (being written).
