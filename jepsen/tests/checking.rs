//! Unit tests of the models and the checker on small hand-made histories: linearizable and
//! not, Knossos `:fail`/`:info` semantics, the etcd log's semantics, keys, model errors and the
//! time limit.

use singularity_jepsen::edn_history::read_edn;
use singularity_jepsen::model::{Step, Stepper};
use singularity_jepsen::{
    check_history, read_history, CheckOptions, CheckReport, Error, ModelKind, Validity, Value,
};

fn check(text: &str, model: ModelKind) -> CheckReport {
    let history = read_history(text, None).unwrap_or_else(|e| panic!("{e}"));
    check_history(&history, &CheckOptions::new(model)).unwrap_or_else(|e| panic!("{e}"))
}

fn valid(text: &str, model: ModelKind) -> Validity {
    check(text, model).valid
}

/// Builds EDN lines from `process type f value` records separated by `;`, e.g.
/// `"0 invoke write 1; 0 ok write 1"`.
fn edn(records: &str) -> String {
    records
        .split(';')
        .map(|record| {
            let mut parts = record.trim().splitn(4, ' ');
            let (p, t, f, v) = (
                parts.next().unwrap_or("0"),
                parts.next().unwrap_or("invoke"),
                parts.next().unwrap_or("read"),
                parts.next().unwrap_or("nil"),
            );
            format!("{{:process {p}, :type :{t}, :f :{f}, :value {v}}}\n")
        })
        .collect()
}

/// Checks each (why, model, records, expected verdict) case.
fn expect_all(cases: &[(&str, ModelKind, &str, Validity)]) {
    for &(why, model, records, expected) in cases {
        assert_eq!(valid(&edn(records), model), expected, "{why}: {records}");
    }
}

use ModelKind::{CasRegister, Register};
use Validity::{Linearizable, NotLinearizable};

#[test]
fn register_steps() {
    let mut stepper = Stepper::new(ModelKind::Register);
    let (nil, one) = (stepper.intern(&Value::Nil), stepper.intern(&Value::Int(1)));
    assert_eq!(stepper.step(nil, Step::Read(nil)), Ok(Some(nil)));
    assert_eq!(stepper.step(nil, Step::Read(one)), Ok(None));
    assert_eq!(stepper.step(nil, Step::Write(one)), Ok(Some(one)));
}

#[test]
fn cas_steps() {
    let mut stepper = Stepper::new(ModelKind::CasRegister);
    let (a, b) = (
        stepper.intern(&Value::Int(1)),
        stepper.intern(&Value::Int(2)),
    );
    assert_eq!(stepper.step(a, Step::Cas(a, b)), Ok(Some(b)));
    assert_eq!(stepper.step(b, Step::Cas(a, b)), Ok(None));
    assert_eq!(stepper.step(a, Step::CasFailed(a)), Ok(None));
    assert_eq!(stepper.step(b, Step::CasFailed(a)), Ok(Some(b)));
    assert_eq!(stepper.step(a, Step::CasMaybe(a, b)), Ok(Some(b)));
    assert_eq!(stepper.step(b, Step::CasMaybe(a, b)), Ok(Some(b)));
}

#[test]
fn kv_steps() {
    let mut stepper = Stepper::new(ModelKind::Kv);
    let empty = stepper.state_of(&Value::Str(String::new()));
    let x = stepper.intern(&Value::Str("x".into()));
    let xx = stepper.intern(&Value::Str("xx".into()));
    let Ok(Some(after_x)) = stepper.step(empty, Step::Append(x)) else {
        panic!("append failed")
    };
    assert_eq!(stepper.step(after_x, Step::Get(x)), Ok(Some(after_x)));
    assert_eq!(stepper.step(after_x, Step::Get(xx)), Ok(None));
    let Ok(Some(after_xx)) = stepper.step(after_x, Step::Append(x)) else {
        panic!("append failed")
    };
    assert_eq!(stepper.step(after_x, Step::Append(x)), Ok(Some(after_xx)));
    assert_eq!(stepper.step(after_xx, Step::Get(xx)), Ok(Some(after_xx)));
    assert_eq!(stepper.state_text(after_xx), "\"xx\"");
    // A put of "xx" is a different state spelling the same string.
    let put_xx = stepper.state_of(&Value::Str("xx".into()));
    assert_eq!(
        stepper.step(after_xx, Step::Write(put_xx)),
        Ok(Some(put_xx))
    );
    assert_eq!(stepper.step(put_xx, Step::Get(xx)), Ok(Some(put_xx)));
    assert_eq!(stepper.step(empty, Step::Get(x)), Ok(None));
}

#[test]
fn register_linearizable_and_not() {
    expect_all(&[
        ("sequential", Register, "0 invoke write 1; 0 ok write 1; 1 invoke read; 1 ok read 1", Linearizable),
        ("concurrent read may see the old value", Register, "0 invoke write 1; 1 invoke read; 1 ok read nil; 0 ok write 1", Linearizable),
        ("new then old value", Register, "0 invoke write 1; 1 invoke read; 1 ok read 1; 2 invoke read; 2 ok read nil; 0 ok write 1", NotLinearizable),
    ]);
    let stale = edn("0 invoke write 1; 0 ok write 1; 1 invoke read; 1 ok read nil");
    let report = check(&stale, Register);
    assert_eq!(report.valid, NotLinearizable);
    let failure = report.failure.unwrap_or_else(|| panic!("no window"));
    assert_eq!(failure.failing_op.f, "read");
    assert_eq!(failure.failing_op.invoke_line, 3);
    assert_eq!(failure.state_before, "1");
}

#[test]
fn fail_means_it_did_not_happen() {
    expect_all(&[
        (
            "failed write",
            Register,
            "0 invoke write 2; 0 fail write 2; 1 invoke read; 1 ok read 2",
            NotLinearizable,
        ),
        (
            "failed read",
            Register,
            "1 invoke read; 1 fail read; 0 invoke write 2; 0 ok write 2",
            Linearizable,
        ),
        (
            "failed cas, whatever the state",
            CasRegister,
            "0 invoke write 1; 0 ok write 1; 0 invoke cas [1 2]; 0 fail cas [1 2]",
            Linearizable,
        ),
    ]);
}

#[test]
fn info_may_happen_later_or_never() {
    expect_all(&[
        ("info write lands later", Register, "0 invoke write 2; 0 info write 2; 1 invoke read; 1 ok read nil; 1 invoke read; 1 ok read 2", Linearizable),
        ("info write never lands", Register, "0 invoke write 2; 0 info write 2; 1 invoke read; 1 ok read nil", Linearizable),
        ("info write cannot be undone", Register, "0 invoke write 2; 0 info write 2; 1 invoke read; 1 ok read 2; 1 invoke read; 1 ok read nil", NotLinearizable),
        ("info cas that can never succeed never happened", CasRegister, "0 invoke cas [7 8]; 0 info cas [7 8]; 1 invoke read; 1 ok read nil", Linearizable),
        ("a missing completion is like info", Register, "0 invoke write 3; 1 invoke read; 1 ok read 3", Linearizable),
    ]);
}

#[test]
fn cas_register() {
    expect_all(&[
        ("cas from the current value", CasRegister, "0 invoke write 1; 0 ok write 1; 0 invoke cas [1 2]; 0 ok cas [1 2]; 1 invoke read; 1 ok read 2", Linearizable),
        ("cas from another value", CasRegister, "0 invoke write 1; 0 ok write 1; 0 invoke cas [3 2]; 0 ok cas [3 2]", NotLinearizable),
    ]);
}

#[test]
fn etcd_log_semantics() {
    let log = |records: &str| {
        records
            .split(';')
            .map(|l| format!("INFO  jepsen.util - {}\n", l.trim().replace(' ', "\t")))
            .collect::<String>()
    };
    let cases = [
        // A failed cas observed a different value: impossible right after writing 1.
        ("0 :invoke :write 1; 0 :ok :write 1; 0 :invoke :cas [1 2]; 0 :fail :cas [1 2]", NotLinearizable),
        ("0 :invoke :write 1; 0 :ok :write 1; 0 :invoke :cas [3 2]; 0 :fail :cas [3 2]", Linearizable),
        // A timed-out read constrains nothing; a timed-out write may land later.
        ("0 :invoke :read nil; 0 :fail :read :timed-out; 1 :invoke :write 4; 1 :info :write :timed-out; 2 :invoke :read nil; 2 :ok :read 4", Linearizable),
    ];
    for (records, expected) in cases {
        assert_eq!(valid(&log(records), CasRegister), expected, "{records}");
    }
}

#[test]
fn keys_are_checked_independently() {
    let text = "{:process 0, :type :invoke, :f :put, :key \"a\", :value \"1\"}\n\
                {:process 0, :type :ok, :f :put, :key \"a\", :value \"1\"}\n\
                {:process 1, :type :invoke, :f :get, :key \"b\", :value nil}\n\
                {:process 1, :type :ok, :f :get, :key \"b\", :value \"1\"}\n\
                {:process 2, :type :invoke, :f :append, :key \"a\", :value \"2\"}\n\
                {:process 2, :type :ok, :f :append, :key \"a\", :value \"2\"}\n\
                {:process 2, :type :invoke, :f :get, :key \"a\", :value nil}\n\
                {:process 2, :type :ok, :f :get, :key \"a\", :value \"12\"}\n";
    let report = check(text, ModelKind::Kv);
    assert_eq!(report.valid, Validity::NotLinearizable);
    assert_eq!(report.keys, 2);
    assert_eq!(report.failure.map(|f| f.key), Some("\"b\"".to_string()));
    // Jepsen independent tuples [key value].
    let tuples = edn("0 invoke write [1 5]; 0 ok write [1 5]; 1 invoke cas [2 [nil 3]]; 1 ok cas [2 [nil 3]]; 2 invoke read [1 nil]; 2 ok read [1 5]; 2 invoke read [2 nil]; 2 ok read [2 3]");
    let report = check(&tuples, ModelKind::CasRegister);
    assert_eq!((report.valid, report.keys), (Validity::Linearizable, 2));
}

#[test]
fn model_errors_name_the_line() {
    let history = read_edn(&edn("0 invoke write 1; 0 ok write 1; 0 invoke cas [1 2]"))
        .unwrap_or_else(|e| panic!("{e}"));
    match check_history(&history, &CheckOptions::new(ModelKind::Register)) {
        Err(Error::Model { line, message, .. }) => {
            assert_eq!(line, 3);
            assert!(message.contains("cas-register"), "{message}");
        }
        other => panic!("expected a model error, got {other:?}"),
    }
    let orphan = read_edn(&edn("0 invoke write 1; 1 ok write 1")).unwrap_or_else(|e| panic!("{e}"));
    assert!(matches!(
        check_history(&orphan, &CheckOptions::new(ModelKind::Register)),
        Err(Error::BadOp { line: 2, .. })
    ));
    let kv_initial = CheckOptions {
        initial: Some(Value::Int(0)),
        ..CheckOptions::new(ModelKind::Kv)
    };
    assert!(matches!(
        check_history(&orphan, &kv_initial),
        Err(Error::BadInitial(_))
    ));
    let empty = read_edn("").unwrap_or_else(|e| panic!("{e}"));
    assert!(matches!(
        check_history(&empty, &CheckOptions::new(ModelKind::Register)),
        Err(Error::EmptyHistory)
    ));
}

#[test]
fn initial_value_is_used() {
    let text = edn("0 invoke read; 0 ok read 0");
    let history = read_edn(&text).unwrap_or_else(|e| panic!("{e}"));
    let with_zero = CheckOptions {
        initial: Some(Value::Int(0)),
        ..CheckOptions::new(ModelKind::Register)
    };
    let report = check_history(&history, &with_zero).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(report.valid, Validity::Linearizable);
    assert_eq!(valid(&text, ModelKind::Register), Validity::NotLinearizable);
}

/// 40 concurrent writes, then a read of a value nobody wrote: refuting it means visiting
/// about 2^40 subsets, so a 1 ms limit must answer unknown with its progress, never a verdict.
pub fn hard_history() -> String {
    let mut lines = Vec::new();
    for p in 0..40 {
        lines.push(format!("{p} invoke write {p}"));
    }
    for p in 0..40 {
        lines.push(format!("{p} ok write {p}"));
    }
    lines.push("99 invoke read".to_string());
    lines.push("99 ok read 999".to_string());
    edn(&lines.join("; "))
}

#[test]
fn time_limit_gives_unknown() {
    let history = read_edn(&hard_history()).unwrap_or_else(|e| panic!("{e}"));
    let options = CheckOptions {
        time_limit_ms: Some(1),
        ..CheckOptions::new(ModelKind::Register)
    };
    let report = check_history(&history, &options).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(report.valid, Validity::Unknown);
    assert!(report.failure.is_none());
    let progress = report.unknown.unwrap_or_else(|| panic!("no progress"));
    assert_eq!(progress.ops_in_key, 41);
    assert!(progress.max_linearized >= 1);
    assert!(
        progress.reason.contains("time limit"),
        "{}",
        progress.reason
    );
}

#[test]
fn huge_time_limit_is_no_limit() {
    let history =
        read_edn(&edn("0 invoke write 1; 0 ok write 1")).unwrap_or_else(|e| panic!("{e}"));
    let options = CheckOptions {
        time_limit_ms: Some(u64::MAX),
        ..CheckOptions::new(Register)
    };
    let report = check_history(&history, &options).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(report.valid, Linearizable);
}
