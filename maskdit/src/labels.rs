//! Class labels as the network takes them: one-hot rows, with an all-zero row as the null label.

use candle_core::{Device, Tensor};

use crate::{Error, Result};

/// One-hot rows `(N, num_classes)` (f32) for `labels`: a class index sets its column, `None`
/// gives the null (all-zero) row. An index outside `0..num_classes` is an error.
pub fn one_hot<L: Into<Option<usize>>>(
    labels: impl IntoIterator<Item = L>,
    num_classes: usize,
    device: &Device,
) -> Result<Tensor> {
    let mut rows = Vec::new();
    let mut count = 0;
    for label in labels {
        let start = rows.len();
        rows.resize(start + num_classes, 0f32);
        if let Some(class) = label.into() {
            if class >= num_classes {
                return Err(Error::Input(format!("class {class} for a model with {num_classes} classes")));
            }
            rows[start + class] = 1.0;
        }
        count += 1;
    }
    Ok(Tensor::from_vec(rows, (count, num_classes), device)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rows_set_one_column_or_none() -> Result<()> {
        let rows = one_hot([Some(2), None, Some(0)], 3, &Device::Cpu)?;
        assert_eq!(rows.to_vec2::<f32>()?, [[0.0, 0.0, 1.0], [0.0, 0.0, 0.0], [1.0, 0.0, 0.0]]);
        assert_eq!(one_hot([1usize, 1], 2, &Device::Cpu)?.to_vec2::<f32>()?, [[0.0, 1.0], [0.0, 1.0]]);
        assert!(one_hot([3usize], 3, &Device::Cpu).is_err());
        Ok(())
    }
}
