//! Labeled data seen as unlabeled: to train an unconditional model on it on purpose.

use rand_chacha::ChaCha12Rng;

use super::{Dataset, Example};
use crate::Result;

/// Another dataset's examples with their labels dropped.
pub struct WithoutLabels(pub Box<dyn Dataset>);

impl Dataset for WithoutLabels {
    fn len(&self) -> usize {
        self.0.len()
    }

    fn dims(&self) -> [usize; 3] {
        self.0.dims()
    }

    fn labeled(&self) -> bool {
        false
    }

    fn check(&self, _num_classes: usize) -> Result<()> {
        self.0.check(0)
    }

    fn get(&self, index: usize, rng: &mut ChaCha12Rng) -> Result<Example> {
        Ok(Example { label: None, ..self.0.get(index, rng)? })
    }
}
