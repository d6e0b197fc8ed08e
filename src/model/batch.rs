//! Padded batches of token ids: the host-side input of [`super::Llava`].

/// Padded token ids and their mask, `[batch, len]` row-major on the host.
#[derive(Debug, Clone, PartialEq)]
pub struct TextBatch {
    /// Token ids, pads included.
    pub ids: Vec<u32>,
    /// `true` for real tokens, `false` for padding.
    pub mask: Vec<bool>,
    /// Rows.
    pub batch: usize,
    /// Columns.
    pub len: usize,
}

/// Where padding goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PaddingSide {
    /// Before the tokens (generation: every row ends at the last column).
    Left,
    /// After the tokens (training).
    Right,
}

impl TextBatch {
    /// Pads `sequences` with `pad_id` to the longest one.
    pub fn pad(sequences: &[Vec<u32>], pad_id: u32, side: PaddingSide) -> Self {
        let len = sequences.iter().map(Vec::len).max().unwrap_or(0);
        let (mut ids, mut mask) = (Vec::new(), Vec::new());
        for seq in sequences {
            let pad = len - seq.len();
            let (real_ids, real_mask) = (seq.iter().copied(), std::iter::repeat_n(true, seq.len()));
            let (pad_ids, pad_mask) = (std::iter::repeat_n(pad_id, pad), std::iter::repeat_n(false, pad));
            match side {
                PaddingSide::Left => {
                    ids.extend(pad_ids.chain(real_ids));
                    mask.extend(pad_mask.chain(real_mask));
                }
                PaddingSide::Right => {
                    ids.extend(real_ids.chain(pad_ids));
                    mask.extend(real_mask.chain(pad_mask));
                }
            }
        }
        TextBatch { ids, mask, batch: sequences.len(), len }
    }

    /// Column of the last real token of each row (0 for an empty row).
    pub fn last_real(&self) -> Vec<usize> {
        self.mask.chunks(self.len.max(1)).map(|row| row.iter().rposition(|&m| m).unwrap_or(0)).collect()
    }
}

/// Where each response token's prediction sits in a right-padded batch of `prompt + response`
/// rows: for row `i` and response token `k < r` (`r` the longest response), the column
/// `p_i + k - 1` of the state that predicts it (clamped to the row's last response token), and a
/// mask that is 1 for real response tokens. Returns `(columns, mask, r)`, both `[b, r]`
/// row-major.
pub fn response_columns(prompt_lens: &[usize], response_lens: &[usize]) -> (Vec<i64>, Vec<f32>, usize) {
    let r = response_lens.iter().copied().max().unwrap_or(0);
    let mut columns = Vec::with_capacity(prompt_lens.len() * r);
    let mut mask = Vec::with_capacity(prompt_lens.len() * r);
    for (&p, &len) in prompt_lens.iter().zip(response_lens) {
        for k in 0..r {
            columns.push((p + k.min(len.saturating_sub(1))) as i64 - 1);
            mask.push(f32::from(u8::from(k < len)));
        }
    }
    (columns, mask, r)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn padding_sides_and_last_real_token() {
        let seqs = vec![vec![5, 6, 7], vec![8]];
        let right = TextBatch::pad(&seqs, 0, PaddingSide::Right);
        assert_eq!(right.ids, vec![5, 6, 7, 8, 0, 0]);
        assert_eq!(right.mask, vec![true, true, true, true, false, false]);
        assert_eq!(right.last_real(), vec![2, 0]);
        let left = TextBatch::pad(&seqs, 0, PaddingSide::Left);
        assert_eq!(left.ids, vec![5, 6, 7, 0, 0, 8]);
        assert_eq!(left.last_real(), vec![2, 2]);
        assert_eq!((left.batch, left.len), (2, 3));
    }

    #[test]
    fn response_columns_point_at_the_predicting_state() {
        // Prompt of 3 and response of 2: tokens at columns 3 and 4, predicted from 2 and 3; the
        // second row (prompt 2, response 1) repeats its last column as padding, masked.
        let (cols, mask, r) = response_columns(&[3, 2], &[2, 1]);
        assert_eq!(r, 2);
        assert_eq!(cols, vec![2, 3, 1, 1]);
        assert_eq!(mask, vec![1.0, 1.0, 1.0, 0.0]);
    }
}
