//! A team with other bots (support / billing / sales) trains its own
//! intents from its own corpus, without a rebuild, and the policy routes
//! with the result exactly as it does with the built-in model.

use std::time::Duration;

use baton_policy::config::{BotConfig, ClassifierConfig, HumanConfig, PolicyConfig};
use baton_policy::features::FeatureSpec;
use baton_policy::{Config, IntentModel, Message, Next, NothingLearned, Policy};
use baton_train::{TrainOptions, evaluate, parse, train};

const CORPUS: &str = include_str!("support_corpus.jsonl");

fn config() -> Config {
    let bot = |id: &str| BotConfig {
        id: id.into(),
        sla_p95: Duration::from_secs(1),
    };
    Config {
        bots: vec![bot("support"), bot("billing"), bot("sales")],
        policy: PolicyConfig {
            priority: vec!["billing".into(), "sales".into()],
            ..Default::default()
        },
        classifier: ClassifierConfig {
            escalate: vec!["human".into()],
            ..Default::default()
        },
        // No trigger phrases: the escalation below is the model's own.
        human: HumanConfig { patterns: vec![] },
        ..Default::default()
    }
}

fn options() -> TrainOptions {
    TrainOptions {
        spec: FeatureSpec {
            bits: 14,
            ..FeatureSpec::default()
        },
        folds: 0,
        min_count: 1,
        alpha: 0.003,
        max_iterations: 200,
    }
}

#[test]
fn a_support_team_trains_and_routes_its_own_intents() {
    let examples = parse(CORPUS, None).expect("corpus");
    let model = train(&examples, &options(), 1, &mut |_| {}).expect("train");
    let names: Vec<&str> = model.classes().iter().map(|c| c.name.as_str()).collect();
    assert_eq!(names, vec!["billing", "human", "sales"]);

    // Through bytes, as `classifier.model` would load it.
    let model = IntentModel::from_bytes(&model.to_bytes()).expect("reload");
    let policy = Policy::with_model(config(), Some(model)).expect("policy");
    let support = policy.bot_ix("support").unwrap();
    let decide = |text: &str| {
        let a = policy.assess(
            &Message {
                source: support,
                text,
                signals: &[],
            },
            &NothingLearned,
        );
        (a.next, a.target.map(|t| policy.bot_id(t).to_owned()))
    };
    assert_eq!(
        decide("I was charged twice this month, refund please"),
        (Next::Handoff, Some("billing".into()))
    );
    assert_eq!(
        decide("we want a quote for 50 more seats"),
        (Next::Handoff, Some("sales".into()))
    );
    assert_eq!(decide("please let me speak to a human").0, Next::Escalate);
    assert_eq!(decide("thanks, the export works now").0, Next::Stay);

    // And it measures itself the same way.
    let report = evaluate(&policy, support, &examples);
    assert!(report.accuracy() > 0.9, "{report}");
}

#[test]
fn a_model_for_other_bots_does_not_fit_the_reference_configuration() {
    let examples = parse(CORPUS, None).expect("corpus");
    let model = train(&examples, &options(), 1, &mut |_| {}).expect("train");
    let err = Policy::with_model(Config::default(), Some(model)).unwrap_err();
    assert!(err.to_string().contains("'billing'"), "{err}");
}
