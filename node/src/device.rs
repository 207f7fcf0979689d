//! The simulated device: buffers in host memory and the named CPU kernels (axpy, scale, dot,
//! matmul, elementwise add and mul). The proxy and the in-process backend run the very same
//! code, so a program's results do not depend on which one it uses.
//!
//! Kernels are sequential loops in a fixed order: the same inputs give the same bits on every
//! machine. It must not do I/O, talk to peers, or know about ranks and jobs.

use crate::error::{NodeError, Result};
use std::collections::BTreeMap;

/// A buffer handle, stable across checkpoint and restore.
pub type Handle = u64;

/// BLAKE3 digest of a buffer's bytes.
pub type Digest = [u8; 32];

/// The content checksum of device buffers (splicing compares by it) and of checkpoint
/// manifests and host state; checkpoint buffer data carries a CRC32C instead.
pub fn digest(bytes: &[u8]) -> Digest {
    *blake3::hash(bytes).as_bytes()
}

/// Hex form of a digest, for manifests and errors.
pub fn hex(d: &Digest) -> String {
    d.iter().map(|b| format!("{b:02x}")).collect()
}

/// A named kernel with its operands (handles into one rank's buffers).
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Kernel {
    /// `y += a * x`
    Axpy { a: f32, x: Handle, y: Handle },
    /// `x *= a`
    Scale { a: f32, x: Handle },
    /// returns `sum_i x[i] * y[i]`, summed in index order
    Dot { x: Handle, y: Handle },
    /// `c[m×n] = op(a)[m×k] · op(b)[k×n]`, row-major, `op` transposes when the flag is set
    Matmul {
        a: Handle,
        b: Handle,
        c: Handle,
        m: u32,
        k: u32,
        n: u32,
        trans_a: bool,
        trans_b: bool,
    },
    /// `out = x + y`
    Add { x: Handle, y: Handle, out: Handle },
    /// `out = x * y`
    Mul { x: Handle, y: Handle, out: Handle },
    /// A liveness hint, not a computation: the contents of `x` are dead until the rank next
    /// writes it. The buffer keeps its handle and size, but its contents become unspecified:
    /// a splicing swap or a checkpoint does not save them, and after one of those the rank
    /// finds zeros, its own stale data, or the data of another rank of the same job there
    /// (never another job's). A program declares it only for a buffer it rewrites entirely
    /// before reading it again (per-step inputs, gradients).
    Discard { x: Handle },
}

/// One buffer on the device, with its checksum when known (None after a write).
#[derive(Debug, Clone, Default)]
pub struct DevBuf {
    pub data: Vec<f32>,
    pub digest: Option<Digest>,
    /// Discarded (`Kernel::Discard`) and not written since: the contents mean nothing.
    pub dead: bool,
    /// Not written since the proxy made it identical to its rank's host copy (a splicing
    /// swap sets it; any write clears it), so that copy need not be compared again.
    pub clean: bool,
}

impl DevBuf {
    /// The buffer's checksum, computed now if a write invalidated it.
    pub fn digest(&mut self) -> Digest {
        if let Some(d) = self.digest {
            return d;
        }
        let d = digest(crate::shm::f32s_as_bytes(&self.data));
        self.digest = Some(d);
        d
    }

    /// Size in bytes.
    pub fn len_bytes(&self) -> u64 {
        self.data.len() as u64 * 4
    }
}

/// One rank's buffers, keyed by handle, and the kernels that run on them.
#[derive(Debug, Default, Clone)]
pub struct BufferSet {
    pub buffers: BTreeMap<Handle, DevBuf>,
}

impl BufferSet {
    /// Total bytes held.
    pub fn len_bytes(&self) -> u64 {
        self.buffers.values().map(DevBuf::len_bytes).sum()
    }

    fn get(&self, h: Handle) -> Result<&[f32]> {
        self.buffers
            .get(&h)
            .map(|b| b.data.as_slice())
            .ok_or_else(|| NodeError::BadRequest(format!("unknown buffer handle {h}")))
    }

    /// Mutable access to a buffer, marking it written.
    pub fn get_mut(&mut self, h: Handle) -> Result<&mut Vec<f32>> {
        let b = self
            .buffers
            .get_mut(&h)
            .ok_or_else(|| NodeError::BadRequest(format!("unknown buffer handle {h}")))?;
        b.digest = None;
        b.dead = false;
        b.clean = false;
        Ok(&mut b.data)
    }

    /// Runs `f(self, output)` with the output taken out of the map; when an input aliases the
    /// output, the map keeps a copy of it for the kernel to read.
    fn with_output<R>(
        &mut self,
        out: Handle,
        inputs: &[Handle],
        f: impl FnOnce(&Self, &mut Vec<f32>) -> Result<R>,
    ) -> Result<R> {
        let mut buf = std::mem::take(self.get_mut(out)?);
        if inputs.contains(&out) {
            if let Some(b) = self.buffers.get_mut(&out) {
                b.data = buf.clone();
            }
        }
        let outcome = f(self, &mut buf);
        if let Some(b) = self.buffers.get_mut(&out) {
            b.data = buf;
        }
        outcome
    }

    /// Runs one kernel; returns the scalar result of `Dot` (0 for the others).
    pub fn run(&mut self, kernel: Kernel) -> Result<f32> {
        match kernel {
            Kernel::Axpy { a, x, y } => self.with_output(y, &[x], |s, out| {
                let xs = s.get(x)?;
                same_len("axpy", xs.len(), out.len())?;
                for (o, v) in out.iter_mut().zip(xs) {
                    *o += a * *v;
                }
                Ok(0.0)
            }),
            Kernel::Scale { a, x } => {
                for v in self.get_mut(x)? {
                    *v *= a;
                }
                Ok(0.0)
            }
            Kernel::Dot { x, y } => {
                let (xs, ys) = (self.get(x)?, self.get(y)?);
                same_len("dot", xs.len(), ys.len())?;
                Ok(xs.iter().zip(ys).fold(0.0f32, |acc, (a, b)| acc + a * b))
            }
            Kernel::Discard { x } => {
                let b = self
                    .buffers
                    .get_mut(&x)
                    .ok_or_else(|| NodeError::BadRequest(format!("unknown buffer handle {x}")))?;
                b.dead = true;
                b.clean = false;
                Ok(0.0)
            }
            Kernel::Add { x, y, out } => self.elementwise("add", x, y, out, |a, b| a + b),
            Kernel::Mul { x, y, out } => self.elementwise("mul", x, y, out, |a, b| a * b),
            Kernel::Matmul {
                a,
                b,
                c,
                m,
                k,
                n,
                trans_a,
                trans_b,
            } => self.with_output(c, &[a, b], |s, out| {
                let (m, k, n) = (m as usize, k as usize, n as usize);
                let (av, bv) = (s.get(a)?, s.get(b)?);
                let need = |what: &str, have: usize, want: Option<usize>| match want {
                    Some(w) if w == have => Ok(()),
                    _ => Err(NodeError::Shape {
                        kernel: "matmul",
                        detail: format!("{what} has {have} elements, shape needs {want:?}"),
                    }),
                };
                need("a", av.len(), m.checked_mul(k))?;
                need("b", bv.len(), k.checked_mul(n))?;
                need("c", out.len(), m.checked_mul(n))?;
                matmul(av, bv, out, m, k, n, trans_a, trans_b);
                Ok(0.0)
            }),
        }
    }

    fn elementwise(
        &mut self,
        name: &'static str,
        x: Handle,
        y: Handle,
        out: Handle,
        f: fn(f32, f32) -> f32,
    ) -> Result<f32> {
        self.with_output(out, &[x, y], |s, o| {
            let (xs, ys) = (s.get(x)?, s.get(y)?);
            same_len(name, xs.len(), ys.len())?;
            same_len(name, xs.len(), o.len())?;
            for ((o, a), b) in o.iter_mut().zip(xs).zip(ys) {
                *o = f(*a, *b);
            }
            Ok(0.0)
        })
    }
}

fn same_len(kernel: &'static str, a: usize, b: usize) -> Result<()> {
    if a != b {
        return Err(NodeError::Shape {
            kernel,
            detail: format!("lengths {a} and {b} differ"),
        });
    }
    Ok(())
}

/// `c = op(a) · op(b)`; every `c[i][j]` sums its products in increasing `p`.
#[allow(clippy::too_many_arguments)]
fn matmul(
    a: &[f32],
    b: &[f32],
    c: &mut [f32],
    m: usize,
    k: usize,
    n: usize,
    trans_a: bool,
    trans_b: bool,
) {
    c.iter_mut().for_each(|v| *v = 0.0);
    let a_at = |i: usize, p: usize| if trans_a { a[p * m + i] } else { a[i * k + p] };
    if !trans_b {
        for i in 0..m {
            let row = &mut c[i * n..(i + 1) * n];
            for p in 0..k {
                let aip = a_at(i, p);
                for (cv, bv) in row.iter_mut().zip(&b[p * n..(p + 1) * n]) {
                    *cv += aip * *bv;
                }
            }
        }
    } else {
        for i in 0..m {
            for j in 0..n {
                let mut acc = 0.0f32;
                for p in 0..k {
                    acc += a_at(i, p) * b[j * k + p];
                }
                c[i * n + j] = acc;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(bufs: &[(Handle, Vec<f32>)]) -> BufferSet {
        let mut s = BufferSet::default();
        for (h, d) in bufs {
            s.buffers.insert(
                *h,
                DevBuf {
                    data: d.clone(),
                    ..Default::default()
                },
            );
        }
        s
    }

    #[test]
    fn kernels_compute_expected_values() {
        let mut s = set(&[(1, vec![1.0, 2.0]), (2, vec![3.0, 4.0]), (3, vec![0.0; 2])]);
        s.run(Kernel::Axpy { a: 2.0, x: 1, y: 2 }).unwrap();
        assert_eq!(s.get(2).unwrap(), &[5.0, 8.0]);
        assert_eq!(s.run(Kernel::Dot { x: 1, y: 2 }).unwrap(), 21.0);
        s.run(Kernel::Add { x: 1, y: 2, out: 3 }).unwrap();
        assert_eq!(s.get(3).unwrap(), &[6.0, 10.0]);
        s.run(Kernel::Mul { x: 1, y: 1, out: 1 }).unwrap();
        assert_eq!(s.get(1).unwrap(), &[1.0, 4.0]);
        s.run(Kernel::Scale { a: 0.5, x: 1 }).unwrap();
        assert_eq!(s.get(1).unwrap(), &[0.5, 2.0]);
    }

    #[test]
    fn discard_marks_a_buffer_dead_until_its_next_write() {
        let mut s = set(&[(1, vec![1.0, 2.0]), (2, vec![3.0, 4.0])]);
        s.buffers.get_mut(&1).unwrap().clean = true;
        s.run(Kernel::Discard { x: 1 }).unwrap();
        assert!(s.buffers[&1].dead && !s.buffers[&1].clean);
        assert_eq!(s.get(1).unwrap(), &[1.0, 2.0], "the hint moves no data");
        s.run(Kernel::Axpy { a: 1.0, x: 2, y: 1 }).unwrap();
        assert!(!s.buffers[&1].dead, "a write makes it live again");
        assert!(s.run(Kernel::Discard { x: 9 }).is_err());
    }

    #[test]
    fn matmul_handles_transposes() {
        // a = [[1,2,3],[4,5,6]] (2×3), b = [[1,0],[0,1],[1,1]] (3×2)
        let a = vec![1.0, 2.0, 3.0, 4.0, 5.0, 6.0];
        let b = vec![1.0, 0.0, 0.0, 1.0, 1.0, 1.0];
        let at = vec![1.0, 4.0, 2.0, 5.0, 3.0, 6.0];
        let bt = vec![1.0, 0.0, 1.0, 0.0, 1.0, 1.0];
        let mut s = set(&[(1, a), (2, b), (3, at), (4, bt), (5, vec![0.0; 4])]);
        let want = [4.0, 5.0, 10.0, 11.0];
        for (a, b, ta, tb) in [
            (1, 2, false, false),
            (3, 2, true, false),
            (1, 4, false, true),
            (3, 4, true, true),
        ] {
            s.run(Kernel::Matmul {
                a,
                b,
                c: 5,
                m: 2,
                k: 3,
                n: 2,
                trans_a: ta,
                trans_b: tb,
            })
            .unwrap();
            assert_eq!(s.get(5).unwrap(), &want, "trans_a {ta} trans_b {tb}");
        }
    }

    #[test]
    fn bad_shapes_and_handles_are_errors() {
        let mut s = set(&[(1, vec![1.0; 3]), (2, vec![1.0; 2])]);
        assert!(s.run(Kernel::Axpy { a: 1.0, x: 1, y: 2 }).is_err());
        assert!(s.run(Kernel::Scale { a: 1.0, x: 9 }).is_err());
        assert!(s
            .run(Kernel::Matmul {
                a: 1,
                b: 2,
                c: 2,
                m: 1,
                k: 3,
                n: 2,
                trans_a: false,
                trans_b: false
            })
            .is_err());
    }
}
