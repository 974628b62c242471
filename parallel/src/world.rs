//! Where this process stands in a data-parallel run: torchrun's environment variables.

use crate::{Error, Result};

/// The variables a launcher (ours, torchrun, or a SLURM script) sets for each rank.
pub const WORLD_SIZE: &str = "WORLD_SIZE";
/// This process's rank among all ranks.
pub const RANK: &str = "RANK";
/// This process's rank on its machine (picks its GPU).
pub const LOCAL_RANK: &str = "LOCAL_RANK";
/// Host of rank 0's rendezvous.
pub const MASTER_ADDR: &str = "MASTER_ADDR";
/// Port of rank 0's rendezvous.
pub const MASTER_PORT: &str = "MASTER_PORT";
/// The run's shared secret: ranks prove they know it when they join (`--nproc` makes one).
pub const RDZV_SECRET: &str = "MASKDIT_RDZV_SECRET";

/// One rank's place in the run.
#[derive(Clone, PartialEq, Eq)]
pub struct World {
    /// Number of ranks.
    pub size: usize,
    /// This rank, `0..size`.
    pub rank: usize,
    /// This rank on its machine.
    pub local_rank: usize,
    /// Rank 0's host.
    pub master_addr: String,
    /// Rank 0's rendezvous port.
    pub master_port: u16,
    /// The run's shared secret; without one any local process can join as a rank.
    pub secret: Option<String>,
}

impl std::fmt::Debug for World {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("World")
            .field("size", &self.size)
            .field("rank", &self.rank)
            .field("local_rank", &self.local_rank)
            .field("master_addr", &self.master_addr)
            .field("master_port", &self.master_port)
            .field("secret", &self.secret.as_ref().map(|_| "(set)"))
            .finish()
    }
}

impl World {
    /// Reads the torchrun variables through `var` (e.g. `|k| std::env::var(k).ok()`): `None`
    /// when `WORLD_SIZE` is unset (a single process); an error when it is set but the others
    /// are missing or inconsistent.
    pub fn from_vars(var: impl Fn(&str) -> Option<String>) -> Result<Option<Self>> {
        let Some(size) = var(WORLD_SIZE) else { return Ok(None) };
        let number = |name: &str, text: Option<String>| -> Result<usize> {
            let text = text.ok_or_else(|| Error::Launch(format!("{WORLD_SIZE} is set but {name} is not")))?;
            text.trim().parse().map_err(|_| Error::Launch(format!("{name}={text} is not a non-negative integer")))
        };
        let size = number(WORLD_SIZE, Some(size))?;
        let rank = number(RANK, var(RANK))?;
        let local_rank = match var(LOCAL_RANK) {
            Some(text) => number(LOCAL_RANK, Some(text))?,
            None => rank,
        };
        if size == 0 || rank >= size {
            return Err(Error::Launch(format!("{RANK}={rank} must lie in 0..{WORLD_SIZE} ({size})")));
        }
        let master_addr = var(MASTER_ADDR).unwrap_or_else(|| "127.0.0.1".into());
        let master_port = match var(MASTER_PORT) {
            Some(text) => {
                text.trim().parse().map_err(|_| Error::Launch(format!("{MASTER_PORT}={text} is not a port number")))?
            }
            None if size == 1 => 0,
            None => return Err(Error::Launch(format!("{WORLD_SIZE}={size} needs {MASTER_PORT}"))),
        };
        let secret = var(RDZV_SECRET).filter(|s| !s.is_empty());
        Ok(Some(Self { size, rank, local_rank, master_addr, master_port, secret }))
    }

    /// Reads the process environment ([`World::from_vars`]).
    pub fn from_env() -> Result<Option<Self>> {
        Self::from_vars(|name| std::env::var(name).ok())
    }

    /// Whether this is rank 0 (the one that writes files).
    pub fn is_main(&self) -> bool {
        self.rank == 0
    }

    /// `MASTER_ADDR:MASTER_PORT`.
    pub fn address(&self) -> String {
        format!("{}:{}", self.master_addr, self.master_port)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vars(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let pairs: Vec<(String, String)> = pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        move |name| pairs.iter().find(|(k, _)| k == name).map(|(_, v)| v.clone())
    }

    #[test]
    fn reads_torchrun_variables() {
        let world = World::from_vars(vars(&[
            ("WORLD_SIZE", "8"),
            ("RANK", "5"),
            ("LOCAL_RANK", "1"),
            ("MASTER_ADDR", "node0"),
            ("MASTER_PORT", "29500"),
        ]))
        .unwrap()
        .unwrap();
        let expected =
            World { size: 8, rank: 5, local_rank: 1, master_addr: "node0".into(), master_port: 29500, secret: None };
        assert_eq!(world, expected);
        assert!(!world.is_main());
        assert_eq!(World::from_vars(vars(&[])).unwrap(), None);
    }

    #[test]
    fn refuses_inconsistent_variables() {
        for bad in [
            vec![("WORLD_SIZE", "2")],
            vec![("WORLD_SIZE", "2"), ("RANK", "2"), ("MASTER_PORT", "1")],
            vec![("WORLD_SIZE", "2"), ("RANK", "1")],
            vec![("WORLD_SIZE", "two"), ("RANK", "1"), ("MASTER_PORT", "1")],
            vec![("WORLD_SIZE", "2"), ("RANK", "1"), ("MASTER_PORT", "http")],
        ] {
            let err = World::from_vars(vars(&bad)).unwrap_err();
            assert!(matches!(err, Error::Launch(_)), "{bad:?}: {err}");
        }
    }
}
