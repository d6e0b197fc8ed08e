//! The synthetic visual world.
