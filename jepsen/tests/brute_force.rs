//! Cross-checks the checker against a brute-force search on many small random cas-register
//! histories (Knossos semantics: `:fail` did not happen, `:info` and missing completions may
//! happen late or never).

use singularity_jepsen::{
    check_history, CheckOptions, History, ModelKind, Op, OpType, Validity, Value,
};

/// A small deterministic generator (xorshift64*), so failures reproduce.
struct Rng(u64);

impl Rng {
    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D) % n
    }
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Kind {
    Read(Option<i64>),
    Write(i64),
    Cas(i64, i64),
}

#[derive(Clone, Copy, Debug)]
struct Brute {
    kind: Kind,
    call: usize,
    ret: Option<usize>,
}

fn value(v: Option<i64>) -> Value {
    v.map_or(Value::Nil, Value::Int)
}

/// A random history and the ops the brute force searches (fail dropped, info reads dropped).
fn random_history(rng: &mut Rng) -> (History, Vec<Brute>) {
    let mut records = Vec::new();
    let mut brute = Vec::new();
    let mut outstanding: [Option<(Kind, usize)>; 3] = [None; 3];
    let mut ids = [0i64, 1, 2];
    let mut next_id = 3;
    for _ in 0..(6 + rng.below(8)) {
        let slot = rng.below(3) as usize;
        let position = records.len();
        match outstanding[slot] {
            None => {
                let v = rng.below(3) as i64;
                let kind = match rng.below(3) {
                    0 => Kind::Read(None),
                    1 => Kind::Write(v),
                    _ => Kind::Cas(v, rng.below(3) as i64),
                };
                let (f, val) = match kind {
                    Kind::Read(_) => ("read", Value::Nil),
                    Kind::Write(v) => ("write", Value::Int(v)),
                    Kind::Cas(a, b) => ("cas", Value::Vector(vec![Value::Int(a), Value::Int(b)])),
                };
                records.push(Op::new(ids[slot], OpType::Invoke, f, val));
                outstanding[slot] = Some((kind, position));
            }
            Some((kind, call)) => {
                outstanding[slot] = None;
                let outcome = match rng.below(6) {
                    0 => OpType::Fail,
                    1 => OpType::Info,
                    _ => OpType::Ok,
                };
                let (f, val, kind) = match kind {
                    Kind::Read(_) => {
                        let seen = [None, Some(0), Some(1), Some(2)][rng.below(4) as usize];
                        ("read", value(seen), Kind::Read(seen))
                    }
                    Kind::Write(v) => ("write", Value::Int(v), kind),
                    Kind::Cas(a, b) => (
                        "cas",
                        Value::Vector(vec![Value::Int(a), Value::Int(b)]),
                        kind,
                    ),
                };
                records.push(Op::new(ids[slot], outcome, f, val));
                match (outcome, kind) {
                    (OpType::Fail, _) | (OpType::Info, Kind::Read(_)) => {}
                    (OpType::Ok, _) => brute.push(Brute {
                        kind,
                        call,
                        ret: Some(position),
                    }),
                    _ => brute.push(Brute {
                        kind,
                        call,
                        ret: None,
                    }),
                }
                if outcome == OpType::Info {
                    ids[slot] = next_id;
                    next_id += 1;
                }
            }
        }
    }
    for (kind, call) in outstanding.into_iter().flatten() {
        if !matches!(kind, Kind::Read(_)) {
            brute.push(Brute {
                kind,
                call,
                ret: None,
            });
        }
    }
    (History::new(records), brute)
}

fn brute_linearizable(ops: &[Brute], done: &mut Vec<bool>, state: Option<i64>) -> bool {
    let must_remain = ops
        .iter()
        .zip(done.iter())
        .any(|(op, &d)| !d && op.ret.is_some());
    if !must_remain {
        return true;
    }
    for i in 0..ops.len() {
        if done[i] {
            continue;
        }
        // Every completed op that returned before this one's call must already be linearized.
        let blocked = ops
            .iter()
            .zip(done.iter())
            .any(|(o, &d)| !d && o.ret.is_some_and(|r| r < ops[i].call));
        if blocked {
            continue;
        }
        let next = match ops[i].kind {
            Kind::Read(seen) => (seen == state).then_some(state),
            Kind::Write(v) => Some(Some(v)),
            Kind::Cas(a, b) => (state == Some(a)).then_some(Some(b)),
        };
        if let Some(next) = next {
            done[i] = true;
            let found = brute_linearizable(ops, done, next);
            done[i] = false;
            if found {
                return true;
            }
        }
    }
    false
}

#[test]
fn checker_agrees_with_brute_force_on_random_histories() {
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
    let (mut checked, mut refuted) = (0, 0);
    for case in 0..3000 {
        let (history, brute) = random_history(&mut rng);
        if history.ops.is_empty() {
            continue;
        }
        let expected = brute_linearizable(&brute, &mut vec![false; brute.len()], None);
        let report = check_history(&history, &CheckOptions::new(ModelKind::CasRegister))
            .unwrap_or_else(|e| panic!("case {case}: {e}"));
        let expected = if expected {
            Validity::Linearizable
        } else {
            Validity::NotLinearizable
        };
        assert_eq!(
            report.valid,
            expected,
            "case {case}:\n{}",
            singularity_jepsen::edn_history::to_edn(&history)
        );
        checked += 1;
        refuted += usize::from(expected == Validity::NotLinearizable);
    }
    assert!(
        checked > 2000 && refuted > 200 && checked - refuted > 200,
        "{checked} {refuted}"
    );
}
