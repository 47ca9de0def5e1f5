//! Maglev consistent-hashing table builder (in progress).
