//! Cross-checks the checker against a brute-force search on many small random cas-register and
//! kv histories (Knossos semantics: `:fail` did not happen, `:info` and missing completions may
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

#[derive(Clone, PartialEq, Eq, Debug)]
enum Kind {
    Read(Option<i64>),
    Write(i64),
    Cas(i64, i64),
    Get(String),
    Put(String),
    Append(String),
}

#[derive(Clone, Debug)]
struct Brute {
    kind: Kind,
    call: usize,
    ret: Option<usize>,
}

fn value(v: Option<i64>) -> Value {
    v.map_or(Value::Nil, Value::Int)
}

const KV_PIECES: [&str; 3] = ["", "a", "b"];

/// A random invocation for `model`.
fn random_invoke(rng: &mut Rng, model: ModelKind) -> Kind {
    let v = rng.below(3) as i64;
    let piece = KV_PIECES[rng.below(3) as usize].to_string();
    match (model, rng.below(3)) {
        (ModelKind::Kv, 0) => Kind::Get(String::new()),
        (ModelKind::Kv, 1) => Kind::Put(piece),
        (ModelKind::Kv, _) => Kind::Append(piece),
        (_, 0) => Kind::Read(None),
        (_, 1) => Kind::Write(v),
        (_, _) => Kind::Cas(v, rng.below(3) as i64),
    }
}

/// The record's function and value.
fn record(kind: &Kind) -> (&'static str, Value) {
    match kind {
        Kind::Read(seen) => ("read", value(*seen)),
        Kind::Write(v) => ("write", Value::Int(*v)),
        Kind::Cas(a, b) => ("cas", Value::Vector(vec![Value::Int(*a), Value::Int(*b)])),
        Kind::Get(seen) => ("get", Value::Str(seen.clone())),
        Kind::Put(v) => ("put", Value::Str(v.clone())),
        Kind::Append(v) => ("append", Value::Str(v.clone())),
    }
}

/// A read's or get's completion sees a random value; others keep their invocation.
fn random_completion(rng: &mut Rng, kind: Kind) -> Kind {
    const SEEN_STRINGS: [&str; 6] = ["", "a", "b", "ab", "ba", "aa"];
    match kind {
        Kind::Read(_) => Kind::Read([None, Some(0), Some(1), Some(2)][rng.below(4) as usize]),
        Kind::Get(_) => Kind::Get(SEEN_STRINGS[rng.below(6) as usize].to_string()),
        other => other,
    }
}

fn is_read(kind: &Kind) -> bool {
    matches!(kind, Kind::Read(_) | Kind::Get(_))
}

/// A random history and the ops the brute force searches (fail dropped, info reads dropped).
fn random_history(rng: &mut Rng, model: ModelKind) -> (History, Vec<Brute>) {
    let mut records = Vec::new();
    let mut brute = Vec::new();
    let mut outstanding: [Option<(Kind, usize)>; 3] = [None, None, None];
    let mut ids = [0i64, 1, 2];
    let mut next_id = 3;
    for _ in 0..(6 + rng.below(8)) {
        let slot = rng.below(3) as usize;
        let position = records.len();
        match outstanding[slot].take() {
            None => {
                let kind = random_invoke(rng, model);
                let (f, val) = record(&kind);
                let val = if is_read(&kind) { Value::Nil } else { val };
                records.push(Op::new(ids[slot], OpType::Invoke, f, val));
                outstanding[slot] = Some((kind, position));
            }
            Some((kind, call)) => {
                let outcome = match rng.below(6) {
                    0 => OpType::Fail,
                    1 => OpType::Info,
                    _ => OpType::Ok,
                };
                let kind = random_completion(rng, kind);
                let (f, val) = record(&kind);
                records.push(Op::new(ids[slot], outcome, f, val));
                let ret = (outcome == OpType::Ok).then_some(position);
                if outcome == OpType::Ok || (outcome == OpType::Info && !is_read(&kind)) {
                    brute.push(Brute { kind, call, ret });
                }
                if outcome == OpType::Info {
                    ids[slot] = next_id;
                    next_id += 1;
                }
            }
        }
    }
    for (kind, call) in outstanding.into_iter().flatten() {
        if !is_read(&kind) {
            brute.push(Brute {
                kind,
                call,
                ret: None,
            });
        }
    }
    (History::new(records), brute)
}

/// The state after `kind`, or `None` when it is not legal in `state`.
fn brute_step(state: &Value, kind: &Kind) -> Option<Value> {
    let text = state.as_str().unwrap_or("");
    match kind {
        Kind::Read(seen) => (value(*seen) == *state).then(|| state.clone()),
        Kind::Write(v) => Some(Value::Int(*v)),
        Kind::Cas(a, b) => (*state == Value::Int(*a)).then_some(Value::Int(*b)),
        Kind::Get(seen) => (seen == text).then(|| state.clone()),
        Kind::Put(v) => Some(Value::Str(v.clone())),
        Kind::Append(v) => Some(Value::Str(format!("{text}{v}"))),
    }
}

fn brute_linearizable(ops: &[Brute], done: &mut Vec<bool>, state: &Value) -> bool {
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
        let next = brute_step(state, &ops[i].kind);
        if let Some(next) = next {
            done[i] = true;
            let found = brute_linearizable(ops, done, &next);
            done[i] = false;
            if found {
                return true;
            }
        }
    }
    false
}

fn agree_on_random_histories(model: ModelKind, initial: Value, seed: u64) {
    let mut rng = Rng(seed);
    let (mut checked, mut refuted) = (0, 0);
    for case in 0..3000 {
        let (history, brute) = random_history(&mut rng, model);
        if history.ops.is_empty() {
            continue;
        }
        let expected = brute_linearizable(&brute, &mut vec![false; brute.len()], &initial);
        let report = check_history(&history, &CheckOptions::new(model))
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

#[test]
fn cas_register_agrees_with_brute_force() {
    agree_on_random_histories(ModelKind::CasRegister, Value::Nil, 0x9E37_79B9_7F4A_7C15);
}

#[test]
fn kv_agrees_with_brute_force() {
    agree_on_random_histories(
        ModelKind::Kv,
        Value::Str(String::new()),
        0xD1B5_4A32_D192_ED03,
    );
}
