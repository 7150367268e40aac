//! Memory images read without a live interpreter: synthetic images of builds that are not
//! installed (3.13t, 3.14, 3.14t), images recorded from the installed interpreters and
//! replayed, and both mutated at random to show the walker survives hostile memory.

mod batched;
mod builder;
mod flavors;
mod hostile;
mod locations;
mod objects;
mod recorded;
mod recorder;
mod synthetic;
