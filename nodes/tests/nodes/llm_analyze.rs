//! `llm-analyze` against an OpenAI-compatible server started inside the test (`llm_fake`):
//! batching arithmetic, faults and fallbacks, concurrency and rate limits, the cache, JSON
//! mode, and the errors that stop a run. Frames come from `testsrc`, records go through the
//! `jsonl` sink, and the graph runs on the real executor.

use crate::llm_fake;

use crate::common::{assert_ok, load, read_records, temp_dir};
use llm_fake::{FakeServer, Fault, Options, graph};
use serde_json::Value;
use std::sync::Arc;
use std::time::{Duration, Instant};
use vidflow_engine::exec::{self, RunOptions, RunReport};
use vidflow_engine::{Mode, NodeError, SourceFile, check_source};

/// Params most tests use: no cache, small images, fast retries.
const FAST: &str = "cache: false, max_side: 128, backoff_ms: 20, max_backoff_ms: 200";

fn run_graph(yaml: &str) -> RunReport {
    let registry = vidflow_nodes::registry();
    let g = load("llm-test.yaml", yaml, &[], &registry);
    exec::run(&g, RunOptions::default())
}

/// Runs `count` frames through llm-analyze and returns the report and the records.
fn analyze(
    server: &FakeServer,
    count: u64,
    params: &str,
    batch: Option<&str>,
) -> (RunReport, Vec<Value>) {
    let dir = temp_dir("llm-analyze");
    let out = dir.join("out.jsonl");
    let report = run_graph(&graph(&server.base_url, count, params, batch, &out));
    let records = if report.ok() {
        read_records(&out)
    } else {
        vec![]
    };
    let _ = std::fs::remove_dir_all(&dir);
    (report, records)
}

/// Exactly one record per frame, in frame order, each with its own timestamp; and where a
/// record has no error, its analysis is about its own frame.
fn one_record_per_frame(records: &[Value], count: u64) {
    assert_eq!(records.len() as u64, count, "records: {records:#?}");
    for (i, r) in records.iter().enumerate() {
        assert_eq!(r["index"], i as u64, "record {i} out of order: {r}");
        let pts = r["pts"].as_f64().expect("pts");
        assert!((pts - i as f64 / 25.0).abs() < 1e-9, "{r}");
        assert_eq!(r["model"], "fake-vision");
        if r["error"].is_null() {
            assert_eq!(r["analysis"], format!("seen frame {i}"), "{r}");
        } else {
            assert!(r["analysis"].is_null(), "{r}");
        }
    }
}

fn no_problems(server: &FakeServer) {
    let p = server.problems();
    assert!(p.is_empty(), "the server found bad requests: {p:#?}");
}

#[test]
fn thirty_frames_in_batches_of_three_make_ten_requests() {
    let server = FakeServer::start(Options {
        max_side: 128,
        prompt_contains: Some("These are frames sampled from one video".into()),
        ..Options::default()
    });
    let (report, records) = analyze(&server, 30, FAST, None);
    assert_ok(&report);
    one_record_per_frame(&records, 30);
    no_problems(&server);
    let reqs = server.requests();
    assert_eq!(reqs.len(), 10, "30 frames / 3 per batch");
    let mut batches: Vec<Vec<u64>> = reqs.iter().map(|r| r.req.frames.clone()).collect();
    batches.sort();
    let expected: Vec<Vec<u64>> = (0..10).map(|b| vec![3 * b, 3 * b + 1, 3 * b + 2]).collect();
    assert_eq!(batches, expected);
    for r in &reqs {
        assert_eq!(r.images, 3);
        assert_eq!(r.req.target, None);
        assert!(r.sizes.iter().all(|&s| s == (128, 72)), "{:?}", r.sizes);
        assert_eq!(r.body["response_format"]["type"], "json_object");
        assert_eq!(r.body["model"], "fake-vision");
    }
    for r in &records {
        let i = r["index"].as_u64().unwrap();
        assert_eq!(r["batch"], i / 3);
        assert_eq!(r["attempts"], 1);
        assert_eq!(r["cached"], false);
        assert!(r["fallback"].is_null() && r["error"].is_null());
        assert!(r["latency_ms"].is_u64());
    }
    // Each request reports 100 + 3 * 10 tokens; the frames' shares add up to it.
    let total: u64 = records.iter().map(|r| r["tokens"].as_u64().unwrap()).sum();
    assert_eq!(total, 10 * 130);
}

#[test]
fn per_frame_mode_sends_one_request_per_frame_with_the_batch_as_context() {
    let server = FakeServer::start(Options {
        max_side: 128,
        ..Options::default()
    });
    let (report, records) = analyze(
        &server,
        12,
        &format!(
            "{FAST}, mode: per_frame, prompt: \"Frame {{index}} at {{pts}} s of {{indices}}\\n{{frames}}\""
        ),
        None,
    );
    assert_ok(&report);
    one_record_per_frame(&records, 12);
    no_problems(&server);
    let reqs = server.requests();
    assert_eq!(reqs.len(), 12);
    for r in &reqs {
        let t = r.req.target.expect("a one-frame request");
        let b = t / 3;
        assert_eq!(r.req.frames, vec![3 * b, 3 * b + 1, 3 * b + 2], "context");
        assert_eq!(r.images, 1);
        let asked = format!(
            "Frame {t} at {:.3} s of {}, {}, {}",
            t as f64 / 25.0,
            3 * b,
            3 * b + 1,
            3 * b + 2
        );
        assert!(r.text.contains(&asked), "{asked:?} not in {}", r.text);
    }
    for r in &records {
        assert_eq!(r["batch"], r["index"].as_u64().unwrap() / 3);
        assert_eq!(r["tokens"], 110);
    }
}

#[test]
fn a_single_frame_goes_alone() {
    let server = FakeServer::start(Options {
        max_side: 128,
        ..Options::default()
    });
    let (report, records) = analyze(&server, 1, FAST, None);
    assert_ok(&report);
    one_record_per_frame(&records, 1);
    no_problems(&server);
    let reqs = server.requests();
    assert_eq!(reqs.len(), 1);
    assert_eq!(reqs[0].req.target, Some(0));
    assert_eq!(reqs[0].images, 1);
}

#[test]
fn batches_over_max_images_are_split_evenly() {
    let server = FakeServer::start(Options {
        max_side: 128,
        max_images: 4,
        ..Options::default()
    });
    let (report, records) = analyze(
        &server,
        14,
        &format!("{FAST}, max_images: 4"),
        Some("{ max: 7, wait_ms: 1000 }"),
    );
    assert_ok(&report);
    one_record_per_frame(&records, 14);
    no_problems(&server);
    let mut sizes: Vec<usize> = server.requests().iter().map(|r| r.images).collect();
    sizes.sort();
    assert_eq!(sizes, vec![3, 3, 4, 4], "two batches of 7 → 4 + 3 each");
}

#[test]
fn faults_are_retried_or_fall_back_and_every_frame_gets_one_record() {
    let policy = |r: &llm_fake::Req| -> Fault {
        let first = r.frames.first().copied().unwrap_or(u64::MAX);
        match (r.target, first, r.attempt) {
            (None, 0, 0) => Fault::TooMany { retry_after_s: 1.0 },
            (None, 3, 0) => Fault::ServerError,
            (None, 6, 0) => Fault::Hang(Duration::from_secs(10)),
            (None, 9, _) => Fault::MalformedContent,
            (None, 12, _) => Fault::WrongCount,
            (None, 15, 0) => Fault::MalformedBody,
            (None, 18, 0) => Fault::Drop,
            (None, 21, _) => Fault::ServerError,
            (Some(22), _, _) => Fault::ServerError,
            (None, 24, _) => Fault::Status(400, "too many images in one request"),
            _ => Fault::None,
        }
    };
    let server = FakeServer::start(Options {
        max_side: 128,
        policy: Arc::new(policy),
        ..Options::default()
    });
    let params = format!("{FAST}, concurrency: 3, max_retries: 2, timeout_s: 0.5");
    let started = Instant::now();
    let (report, records) = analyze(&server, 30, &params, None);
    assert_ok(&report);
    one_record_per_frame(&records, 30);
    no_problems(&server);
    assert!(started.elapsed() < Duration::from_secs(20));

    let attempts = |i: usize| records[i]["attempts"].as_u64().unwrap();
    let fallback = |i: usize| records[i]["fallback"].as_str().unwrap_or("").to_string();
    // 429, then fine after Retry-After.
    assert_eq!((attempts(0), attempts(2)), (2, 2));
    // 500 then fine; a hang past the timeout then fine; a malformed body then fine; a
    // dropped connection then fine.
    for i in [3, 6, 15, 18] {
        assert_eq!(attempts(i), 2, "{}", records[i]);
        assert!(records[i]["fallback"].is_null());
    }
    assert!(
        records[6]["latency_ms"].as_u64().unwrap() >= 500,
        "{}",
        records[6]
    );
    // Answers that cannot be split: frames asked one by one.
    for i in [9, 10, 11] {
        assert!(fallback(i).contains("not JSON"), "{}", records[i]);
        assert_eq!(attempts(i), 2);
    }
    for i in [12, 13, 14] {
        assert!(
            fallback(i).contains("2 entries for 3 frames"),
            "{}",
            records[i]
        );
    }
    // A batch that fails every retry: frames one by one; frame 22 fails alone too.
    for i in [21, 23] {
        assert!(fallback(i).contains("HTTP 500"), "{}", records[i]);
        assert_eq!(attempts(i), 4, "3 for the batch, 1 alone: {}", records[i]);
        assert!(records[i]["error"].is_null());
    }
    assert_eq!(attempts(22), 6, "{}", records[22]);
    let err = records[22]["error"]
        .as_str()
        .expect("frame 22 has an error");
    assert!(
        err.contains("HTTP 500") && err.contains("gave up after 3 attempts"),
        "{err}"
    );
    // A refused batch (400) is not retried as is; its frames go alone.
    for i in [24, 25, 26] {
        assert!(fallback(i).contains("HTTP 400"), "{}", records[i]);
        assert_eq!(attempts(i), 2);
    }
    let errors: Vec<u64> = records
        .iter()
        .filter(|r| !r["error"].is_null())
        .map(|r| r["index"].as_u64().unwrap())
        .collect();
    assert_eq!(errors, vec![22]);

    // Requests match the arithmetic: 2+2+2 (retried once) + 1+3 + 1+3 (split fails) + 2+2 +
    // 3+(1+3+1) (batch exhausted, 22 exhausted) + 1+3 (refused) + 1.
    let reqs = server.requests();
    assert_eq!(
        reqs.len(),
        31,
        "{:#?}",
        reqs.iter().map(|r| (&r.req, &r.fault)).collect::<Vec<_>>()
    );
    assert!(server.max_in_flight() <= 3);
    // Retry-After was honoured: the retry of batch 0 came at least 1 s after its 429.
    let at = |frames: &[u64], attempt: usize| {
        reqs.iter()
            .find(|r| r.req.frames == frames && r.req.target.is_none() && r.req.attempt == attempt)
            .map(|r| r.at)
            .expect("request seen")
    };
    let gap = at(&[0, 1, 2], 1) - at(&[0, 1, 2], 0);
    assert!(gap >= Duration::from_millis(990), "retried after {gap:?}");
}

#[test]
fn retries_give_up_with_the_error_in_the_record() {
    let server = FakeServer::start(Options {
        max_side: 128,
        policy: Arc::new(|r| {
            if r.frames.contains(&4) {
                Fault::TooMany {
                    retry_after_s: 0.05,
                }
            } else {
                Fault::None
            }
        }),
        ..Options::default()
    });
    let (report, records) = analyze(&server, 6, &format!("{FAST}, max_retries: 1"), None);
    assert_ok(&report);
    one_record_per_frame(&records, 6);
    for (i, r) in records.iter().enumerate().skip(3) {
        if i == 4 {
            let e = r["error"].as_str().expect("error");
            assert!(
                e.contains("HTTP 429") && e.contains("gave up after 2 attempts"),
                "{e}"
            );
            assert_eq!(r["attempts"], 4);
        } else {
            // Frames 3 and 5 are asked alone with 4 in their context, so they fail too.
            assert!(r["error"].as_str().unwrap().contains("429"));
        }
    }
    assert!(records[..3].iter().all(|r| r["error"].is_null()));
}

#[test]
fn records_come_out_in_frame_order_when_answers_do_not() {
    let server = FakeServer::start(Options {
        max_side: 128,
        policy: Arc::new(|r| match r.frames.first() {
            Some(0) => Fault::Slow(Duration::from_millis(400)),
            Some(3) => Fault::Slow(Duration::from_millis(200)),
            _ => Fault::None,
        }),
        ..Options::default()
    });
    let (report, records) = analyze(&server, 15, &format!("{FAST}, concurrency: 5"), None);
    assert_ok(&report);
    one_record_per_frame(&records, 15);
    assert_eq!(server.count(), 5);
}

#[test]
fn concurrency_is_never_exceeded_and_is_used() {
    // Text only, so that the test measures the node rather than JPEG encoding on a busy
    // machine; latency long enough that frames are always ready before a worker is free.
    let latency = Duration::from_millis(300);
    for (concurrency, mode, count) in [
        (1, "per_frame", 3),
        (3, "per_frame", 9),
        (5, "multi_image", 30),
    ] {
        let server = FakeServer::start(Options {
            images_expected: false,
            latency,
            ..Options::default()
        });
        let started = Instant::now();
        let (report, records) = analyze(
            &server,
            count,
            &format!("{FAST}, send_images: false, concurrency: {concurrency}, mode: {mode}"),
            None,
        );
        let took = started.elapsed();
        assert_ok(&report);
        one_record_per_frame(&records, count);
        no_problems(&server);
        assert_eq!(
            server.max_in_flight(),
            concurrency,
            "concurrency {concurrency} ({mode}): the server saw {} at once",
            server.max_in_flight()
        );
        // The node does not wait for one answer before sending the next request.
        let requests = server.count() as u32;
        let serial = latency * requests;
        if concurrency > 1 {
            assert!(
                took < serial,
                "{mode} x{concurrency}: {took:?} vs serial {serial:?}"
            );
        }
    }
}

/// Checks a token bucket's promise on arrival times: within any window [t_i, t_j], at most
/// `capacity + rate * (t_j - t_i)` units (plus `slack` for timing noise).
fn bucket_holds(events: &[(Duration, f64)], capacity: f64, rate: f64, slack: f64) {
    for i in 0..events.len() {
        let mut sum = 0.0;
        for j in i..events.len() {
            sum += events[j].1;
            let dt = (events[j].0 - events[i].0).as_secs_f64();
            assert!(
                sum <= capacity + rate * dt + slack,
                "{sum} units within {dt:.3} s (from event {i} to {j}); allowed {capacity} + {rate}/s"
            );
        }
    }
}

#[test]
fn requests_per_minute_holds() {
    let server = FakeServer::start(Options {
        max_side: 128,
        ..Options::default()
    });
    // 610 a minute: 10 a second, bursts of at most 10.
    let (report, records) = analyze(
        &server,
        25,
        &format!("{FAST}, mode: per_frame, concurrency: 5, requests_per_minute: 610"),
        None,
    );
    assert_ok(&report);
    one_record_per_frame(&records, 25);
    let mut at: Vec<Duration> = server.requests().iter().map(|r| r.at).collect();
    at.sort();
    assert_eq!(at.len(), 25);
    bucket_holds(
        &at.iter().map(|&t| (t, 1.0)).collect::<Vec<_>>(),
        10.0,
        10.0,
        3.0,
    );
    let span = *at.last().unwrap() - at[0];
    assert!(
        span >= Duration::from_millis(1400),
        "25 requests in {span:?}"
    );
}

#[test]
fn tokens_per_minute_holds() {
    // Each one-frame request reports 100 + 10 = 110 tokens; 61 000 a minute is 1 000 a
    // second, bursts of at most 1 000.
    let server = FakeServer::start(Options {
        images_expected: false,
        ..Options::default()
    });
    let (report, records) = analyze(
        &server,
        20,
        "cache: false, mode: per_frame, send_images: false, concurrency: 5, max_tokens: 50, tokens_per_minute: 61000",
        None,
    );
    assert_ok(&report);
    one_record_per_frame(&records, 20);
    let mut at: Vec<Duration> = server.requests().iter().map(|r| r.at).collect();
    at.sort();
    assert_eq!(at.len(), 20);
    // Slack: one request's estimate (text / 4 + max_tokens) may be in flight uncorrected.
    bucket_holds(
        &at.iter().map(|&t| (t, 110.0)).collect::<Vec<_>>(),
        1000.0,
        1000.0,
        300.0,
    );
    let span = *at.last().unwrap() - at[0];
    assert!(
        span >= Duration::from_millis(900),
        "2200 tokens in {span:?}"
    );
}

#[test]
fn a_second_run_is_answered_from_the_cache() {
    let server = FakeServer::start(Options {
        max_side: 128,
        ..Options::default()
    });
    let cache = temp_dir("llm-cache");
    let params = format!(
        "max_side: 128, cache_dir: \"{}\"",
        cache.join("answers").display()
    );
    let (report, first) = analyze(&server, 30, &params, None);
    assert_ok(&report);
    one_record_per_frame(&first, 30);
    assert_eq!(server.count(), 10);

    let (report, second) = analyze(&server, 30, &params, None);
    assert_ok(&report);
    one_record_per_frame(&second, 30);
    assert_eq!(server.count(), 10, "the second run sent requests");
    for (a, b) in first.iter().zip(&second) {
        assert_eq!(a["analysis"], b["analysis"]);
        assert_eq!(a["tokens"], b["tokens"]);
        assert_eq!(b["cached"], true);
        assert_eq!(b["attempts"], 0);
    }

    // A different prompt is a different request.
    let (report, third) = analyze(
        &server,
        30,
        &format!("{params}, prompt: \"What changed?\\n{{frames}}\""),
        None,
    );
    assert_ok(&report);
    one_record_per_frame(&third, 30);
    assert_eq!(server.count(), 20);
    assert!(third.iter().all(|r| r["cached"] == false));
    let _ = std::fs::remove_dir_all(&cache);
}

#[test]
fn send_images_false_sends_only_the_frame_list() {
    let server = FakeServer::start(Options {
        images_expected: false,
        prompt_contains: Some("Frames in view: 0, 1, 2".into()),
        ..Options::default()
    });
    let (report, records) = analyze(
        &server,
        3,
        "cache: false, send_images: false, prompt: \"Frames in view: {indices} ({count}, {start} to {end} s)\\n{frames}\"",
        None,
    );
    assert_ok(&report);
    one_record_per_frame(&records, 3);
    no_problems(&server);
    let reqs = server.requests();
    assert_eq!(reqs.len(), 1);
    let content = &reqs[0].body["messages"][0]["content"];
    let text = content
        .as_str()
        .expect("text-only content is a plain string");
    assert!(text.contains("(3, 0.000 to 0.080 s)"), "{text}");
    assert!(text.contains("- frame 1 at 0.040 s"), "{text}");
    assert!(text.contains("No images are attached"), "{text}");
}

#[test]
fn a_server_without_json_mode_is_asked_without_it() {
    let server = FakeServer::start(Options {
        max_side: 128,
        reject_response_format: true,
        ..Options::default()
    });
    let (report, records) = analyze(&server, 30, &format!("{FAST}, concurrency: 2"), None);
    assert_ok(&report);
    one_record_per_frame(&records, 30);
    assert!(records.iter().all(|r| r["fallback"].is_null()));
    let reqs = server.requests();
    let rejected = reqs
        .iter()
        .filter(|r| r.body.get("response_format").is_some())
        .count();
    assert!(
        (1..=2).contains(&rejected),
        "{rejected} requests had response_format"
    );
    assert_eq!(reqs.len(), 10 + rejected);
}

#[test]
fn a_wrong_api_key_stops_the_run_with_one_message() {
    let server = FakeServer::start(Options {
        max_side: 128,
        policy: Arc::new(|_| Fault::Status(401, "Incorrect API key provided")),
        ..Options::default()
    });
    let (report, _) = analyze(&server, 9, FAST, None);
    let f = report.failure.expect("the run fails");
    assert_eq!(f.node, "analyze");
    assert!(matches!(f.error, NodeError::Input(_)), "{:?}", f.error);
    let msg = f.error.to_string();
    assert!(
        msg.contains("HTTP 401") && msg.contains("api_key_env"),
        "{msg}"
    );
    assert!(msg.contains(&server.base_url), "{msg}");
    // Nothing is retried past the first refusal.
    assert!(server.count() <= 3, "{} requests", server.count());
}

#[test]
fn an_unreachable_server_stops_the_run_with_one_message() {
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let url = format!("http://127.0.0.1:{port}/v1");
    let dir = temp_dir("llm-unreachable");
    let started = Instant::now();
    let report = run_graph(&graph(
        &url,
        9,
        &format!("{FAST}, max_retries: 1"),
        None,
        &dir.join("o.jsonl"),
    ));
    assert!(started.elapsed() < Duration::from_secs(10));
    let f = report.failure.expect("the run fails");
    let msg = f.error.to_string();
    assert!(
        msg.contains("cannot connect") && msg.contains(&url) && msg.contains("base_url"),
        "{msg}"
    );
    assert!(!dir.join("o.jsonl").exists(), "no finished-looking output");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn an_unset_api_key_variable_is_an_input_error() {
    let server = FakeServer::start(Options::default());
    let (report, _) = analyze(
        &server,
        3,
        "cache: false, api_key_env: VIDFLOW_TEST_SURELY_UNSET_KEY_4711",
        None,
    );
    let f = report.failure.expect("the run fails");
    assert!(matches!(f.error, NodeError::Input(_)));
    assert!(
        f.error
            .to_string()
            .contains("VIDFLOW_TEST_SURELY_UNSET_KEY_4711")
    );
    assert_eq!(server.count(), 0);
}

#[test]
fn the_checker_knows_the_params() {
    let registry = vidflow_nodes::registry();
    let check = |url: &str, params: &str| {
        let yaml = graph(url, 3, params, None, std::path::Path::new("o.jsonl"));
        match check_source(
            SourceFile::new("bad.yaml", yaml),
            &registry,
            &[],
            Mode::Check,
        ) {
            Ok(_) => panic!("the graph should be invalid"),
            Err(e) => e.render(),
        }
    };
    let text = check("http://x/v1", "mode: sideways");
    assert!(
        text.contains("sideways") && text.contains("per_frame"),
        "{text}"
    );
    // Beyond types: the URL's scheme and the prompt's placeholders.
    let text = check("localhost:1", "prompt: \"{frame} {frames}\"");
    assert!(
        text.contains("base_url") && text.contains("http://"),
        "{text}"
    );
    assert!(
        text.contains("`{frame}`") && text.contains("{indices}"),
        "{text}"
    );
}
