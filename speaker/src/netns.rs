//! Running a piece of code inside the node's network namespace: a thread
//! enters it, so the process itself stays where it is (and keeps reaching the
//! apiserver). How the tests run three nodes in one process tree; in a
//! cluster there is no namespace to enter and the code runs on a thread as is.

use std::io;
use std::path::PathBuf;

/// Runs `work` on a thread inside `netns` (a file such as `/run/netns/NAME`)
/// when given, and returns what it returned.
pub fn run_in<T, F>(netns: Option<PathBuf>, work: F) -> io::Result<T>
where
    T: Send + 'static,
    F: FnOnce() -> io::Result<T> + Send + 'static,
{
    std::thread::spawn(move || {
        if let Some(path) = &netns {
            let file = std::fs::File::open(path).map_err(|e| {
                io::Error::new(e.kind(), format!("opening {}: {e}", path.display()))
            })?;
            nix::sched::setns(file, nix::sched::CloneFlags::CLONE_NEWNET)
                .map_err(|e| io::Error::other(format!("entering {}: {e}", path.display())))?;
        }
        work()
    })
    .join()
    .map_err(|_| io::Error::other("the namespace thread panicked"))?
}
