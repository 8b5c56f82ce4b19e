//! The memory component (LegoOS mComponent, paper §4.4): owns vRegions of process address spaces,
//! handles the memory system calls of the processes it is home for, and stores their pages.
//!
//! Not implemented yet: `lego run` keeps a vNode's memory in the pComponent until the ExCache issue
//! lands. This crate exports nothing so that nothing can be mistaken for a working server.
