//! Packet wire formats (in progress).
