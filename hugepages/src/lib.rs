//! Hugepage memory for Sluice (placeholder; filled by the foundation work).
