//! Pure protocol code on the request path: path classification, Accept parsing, challenge
//! parsing, routing. Run with `cargo bench --bench protocols`.

use std::hint::black_box;

use criterion::{Criterion, criterion_group, criterion_main};

const PATHS: &[&str] = &[
    "/library/nginx/manifests/1.27",
    "/library/nginx/manifests/sha256:0b1e9c4c1d7a4f58c3c3d3f0b0c29b69e0a1a1c79e2c44b6a6d1d5b7b5a1c2d3",
    "/bitnami/postgresql/blobs/sha256:6f1e9c4c1d7a4f58c3c3d3f0b0c29b69e0a1a1c79e2c44b6a6d1d5b7b5a1c2d3",
    "/org/team/deep/nested/app/tags/list",
    "/a/b/../c/manifests/x",
];

const ACCEPT: &[&str] = &[
    "application/vnd.docker.distribution.manifest.v2+json, application/vnd.docker.distribution.manifest.list.v2+json, application/vnd.oci.image.manifest.v1+json, application/vnd.oci.image.index.v1+json, */*",
];

fn parse(c: &mut Criterion) {
    c.bench_function("oci::parse_v2_path x5", |b| {
        b.iter(|| {
            for p in PATHS {
                let _ = black_box(oci::request::parse_v2_path(black_box(p)));
            }
        })
    });
    c.bench_function("oci::AcceptSet::parse containerd", |b| {
        b.iter(|| {
            black_box(oci::media::AcceptSet::parse(black_box(
                ACCEPT.iter().copied(),
            )))
        })
    });
    let challenge = r#"Bearer realm="https://auth.example.test/token",service="registry.example.test",scope="repository:library/alpine:pull""#;
    c.bench_function("oci::auth::parse_www_authenticate", |b| {
        b.iter(|| black_box(oci::auth::parse_www_authenticate(black_box(challenge))))
    });
    let upstreams = vec![
        "docker.io".to_owned(),
        "ghcr.io".to_owned(),
        "quay.io".to_owned(),
    ];
    let uri: http::Uri = "/v2/library/alpine/blobs/sha256:6f1e9c4c1d7a4f58c3c3d3f0b0c29b69e0a1a1c79e2c44b6a6d1d5b7b5a1c2d3?ns=docker.io".parse().unwrap();
    c.bench_function("route ns blob", |b| {
        b.iter(|| {
            black_box(pinproxy::route::route(
                &http::Method::GET,
                black_box(&uri),
                &upstreams,
                Some(0),
            ))
        })
    });
}

criterion_group!(benches, parse);
criterion_main!(benches);
