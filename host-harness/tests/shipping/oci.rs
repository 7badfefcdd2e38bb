//! The OCI image (`scripts/oci.sh`, `envoy/oci/`).

use super::*;

/// SHA-256 (FIPS 180-4), hex: the test computes digests itself rather than
/// trusting the script's sha256sum.
fn sha256_hex(data: &[u8]) -> String {
    const K: [u32; 64] = [
        0x428a2f98, 0x71374491, 0xb5c0fbcf, 0xe9b5dba5, 0x3956c25b, 0x59f111f1, 0x923f82a4,
        0xab1c5ed5, 0xd807aa98, 0x12835b01, 0x243185be, 0x550c7dc3, 0x72be5d74, 0x80deb1fe,
        0x9bdc06a7, 0xc19bf174, 0xe49b69c1, 0xefbe4786, 0x0fc19dc6, 0x240ca1cc, 0x2de92c6f,
        0x4a7484aa, 0x5cb0a9dc, 0x76f988da, 0x983e5152, 0xa831c66d, 0xb00327c8, 0xbf597fc7,
        0xc6e00bf3, 0xd5a79147, 0x06ca6351, 0x14292967, 0x27b70a85, 0x2e1b2138, 0x4d2c6dfc,
        0x53380d13, 0x650a7354, 0x766a0abb, 0x81c2c92e, 0x92722c85, 0xa2bfe8a1, 0xa81a664b,
        0xc24b8b70, 0xc76c51a3, 0xd192e819, 0xd6990624, 0xf40e3585, 0x106aa070, 0x19a4c116,
        0x1e376c08, 0x2748774c, 0x34b0bcb5, 0x391c0cb3, 0x4ed8aa4a, 0x5b9cca4f, 0x682e6ff3,
        0x748f82ee, 0x78a5636f, 0x84c87814, 0x8cc70208, 0x90befffa, 0xa4506ceb, 0xbef9a3f7,
        0xc67178f2,
    ];
    let mut h: [u32; 8] = [
        0x6a09e667, 0xbb67ae85, 0x3c6ef372, 0xa54ff53a, 0x510e527f, 0x9b05688c, 0x1f83d9ab,
        0x5be0cd19,
    ];
    let mut msg = data.to_vec();
    msg.push(0x80);
    while msg.len() % 64 != 56 {
        msg.push(0);
    }
    msg.extend_from_slice(&((data.len() as u64) * 8).to_be_bytes());
    for chunk in msg.chunks(64) {
        let mut w = [0u32; 64];
        for (i, word) in chunk.chunks(4).enumerate() {
            w[i] = u32::from_be_bytes([word[0], word[1], word[2], word[3]]);
        }
        for i in 16..64 {
            let s0 = w[i - 15].rotate_right(7) ^ w[i - 15].rotate_right(18) ^ (w[i - 15] >> 3);
            let s1 = w[i - 2].rotate_right(17) ^ w[i - 2].rotate_right(19) ^ (w[i - 2] >> 10);
            w[i] = w[i - 16]
                .wrapping_add(s0)
                .wrapping_add(w[i - 7])
                .wrapping_add(s1);
        }
        let mut v = h;
        for i in 0..64 {
            let s1 = v[4].rotate_right(6) ^ v[4].rotate_right(11) ^ v[4].rotate_right(25);
            let ch = (v[4] & v[5]) ^ (!v[4] & v[6]);
            let t1 = v[7]
                .wrapping_add(s1)
                .wrapping_add(ch)
                .wrapping_add(K[i])
                .wrapping_add(w[i]);
            let s0 = v[0].rotate_right(2) ^ v[0].rotate_right(13) ^ v[0].rotate_right(22);
            let maj = (v[0] & v[1]) ^ (v[0] & v[2]) ^ (v[1] & v[2]);
            let t2 = s0.wrapping_add(maj);
            v = [v[0], v[0], v[1], v[2], v[3], v[4], v[5], v[6]];
            v[0] = t1.wrapping_add(t2);
            v[4] = v[4].wrapping_add(t1);
        }
        for (a, b) in h.iter_mut().zip(v) {
            *a = a.wrapping_add(b);
        }
    }
    h.iter().map(|x| format!("{x:08x}")).collect()
}

#[test]
fn sha256_known_answers() {
    assert_eq!(
        sha256_hex(b""),
        "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
    );
    assert_eq!(
        sha256_hex(b"abc"),
        "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
    );
    assert_eq!(
        sha256_hex(&[b'a'; 1000]),
        "41edece42d63e8d9bf515a9ba6932e1c20cbc9f5a5d134645adb5db1b9737ea3"
    );
}

/// One regular file of a tar archive (ustar / GNU).
fn tar_files(data: &[u8]) -> BTreeMap<String, Vec<u8>> {
    let field = |b: &[u8]| {
        let end = b.iter().position(|&c| c == 0).unwrap_or(b.len());
        String::from_utf8_lossy(&b[..end]).trim().to_string()
    };
    let mut files = BTreeMap::new();
    let mut off = 0;
    while off + 512 <= data.len() {
        let h = &data[off..off + 512];
        if h.iter().all(|&b| b == 0) {
            break;
        }
        let stored: u32 = u32::from_str_radix(&field(&h[148..156]), 8).expect("checksum");
        let sum: u32 = h
            .iter()
            .enumerate()
            .map(|(i, &b)| {
                if (148..156).contains(&i) {
                    32
                } else {
                    u32::from(b)
                }
            })
            .sum();
        assert_eq!(stored, sum, "tar header checksum");
        let mut name = field(&h[0..100]);
        let prefix = field(&h[345..500]);
        if !prefix.is_empty() {
            name = format!("{prefix}/{name}");
        }
        let size = usize::from_str_radix(&field(&h[124..136]), 8).expect("size");
        let typeflag = h[156];
        off += 512;
        match typeflag {
            b'0' | 0 => {
                assert!(off + size <= data.len(), "truncated tar");
                files.insert(
                    name.trim_start_matches("./").to_string(),
                    data[off..off + size].to_vec(),
                );
            }
            b'5' => {}
            other => panic!("unexpected tar entry type {:?} for {name}", other as char),
        }
        off += size.div_ceil(512) * 512;
    }
    files
}

fn gunzip(data: &[u8]) -> Vec<u8> {
    use std::io::Write;
    let mut child = Command::new("gzip")
        .arg("-dc")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("gzip");
    let mut stdin = child.stdin.take().expect("stdin");
    let input = data.to_vec();
    let writer = std::thread::spawn(move || stdin.write_all(&input));
    let out = child.wait_with_output().expect("gzip -dc");
    writer.join().expect("writer").expect("write to gzip");
    assert!(out.status.success(), "gzip -dc failed");
    out.stdout
}

fn have(tool: &str) -> bool {
    Command::new(tool)
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok()
}

#[test]
fn oci_dockerfile_is_one_copy_onto_scratch() {
    let text = read("envoy/oci/Dockerfile");
    let lines: Vec<&str> = text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .collect();
    assert_eq!(
        lines,
        ["FROM scratch", "COPY locality_failover.wasm ./plugin.wasm"]
    );
}

#[test]
fn oci_image_layout_and_archive() {
    let wasm_path = root().join("build/locality_failover.wasm");
    let Ok(wasm) = std::fs::read(&wasm_path) else {
        eprintln!(
            "SKIP: {} not built (make build): OCI packaging not checked",
            wasm_path.display()
        );
        return;
    };
    if !["tar", "gzip", "sha256sum"].iter().all(|t| have(t)) {
        eprintln!("SKIP: tar, gzip or sha256sum missing");
        return;
    }
    let dir = TempDir::new("oci").expect("temp dir");
    let out = Command::new("bash")
        .arg(root().join("scripts/oci.sh"))
        .env("OCI_OUT", dir.path())
        .output()
        .expect("run scripts/oci.sh");
    assert!(
        out.status.success(),
        "scripts/oci.sh failed:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let layout = dir.path().join("oci");
    let file = |rel: &str| std::fs::read(layout.join(rel)).unwrap_or_else(|e| panic!("{rel}: {e}"));
    let json_of = |bytes: &[u8]| -> Value { serde_json::from_slice(bytes).expect("json") };
    let blob = |descriptor: &Value, media_type: &str| -> Vec<u8> {
        assert_eq!(s(descriptor, "/mediaType"), media_type);
        let digest = s(descriptor, "/digest");
        let hex = digest.strip_prefix("sha256:").expect("sha256 digest");
        let bytes = file(&format!("blobs/sha256/{hex}"));
        assert_eq!(sha256_hex(&bytes), hex, "digest of {media_type}");
        assert_eq!(
            descriptor.get("size").and_then(Value::as_u64),
            Some(bytes.len() as u64),
            "size of {media_type}"
        );
        bytes
    };

    assert_eq!(
        json_of(&file("oci-layout")),
        json!({"imageLayoutVersion": "1.0.0"})
    );
    let index = json_of(&file("index.json"));
    assert_eq!(index.get("schemaVersion"), Some(&json!(2)));
    assert_eq!(
        s(&index, "/mediaType"),
        "application/vnd.oci.image.index.v1+json"
    );
    let manifests = index
        .get("manifests")
        .and_then(Value::as_array)
        .expect("manifests");
    assert_eq!(manifests.len(), 1);
    assert!(
        !s(
            &manifests[0],
            "/annotations/org.opencontainers.image.ref.name"
        )
        .is_empty(),
        "a tag"
    );
    let manifest = json_of(&blob(
        &manifests[0],
        "application/vnd.oci.image.manifest.v1+json",
    ));
    assert_eq!(manifest.get("schemaVersion"), Some(&json!(2)));
    assert_eq!(
        s(&manifest, "/mediaType"),
        "application/vnd.oci.image.manifest.v1+json"
    );
    let config = json_of(&blob(
        manifest.get("config").expect("config"),
        "application/vnd.oci.image.config.v1+json",
    ));
    let layers = manifest
        .get("layers")
        .and_then(Value::as_array)
        .expect("layers");
    assert_eq!(layers.len(), 1, "one layer, as FROM scratch + one COPY");
    // Istio's image fetcher takes the last layer of this media type and
    // extracts the file named plugin.wasm from it.
    let layer_gz = blob(&layers[0], "application/vnd.oci.image.layer.v1.tar+gzip");
    let layer_tar = gunzip(&layer_gz);
    assert_eq!(
        config.pointer("/rootfs"),
        Some(
            &json!({"type": "layers", "diff_ids": [format!("sha256:{}", sha256_hex(&layer_tar))]})
        ),
        "config.rootfs.diff_ids = the uncompressed layer's digest"
    );
    assert!(config.get("architecture").is_some() && config.get("os").is_some());
    let files = tar_files(&layer_tar);
    assert_eq!(
        files.keys().collect::<Vec<_>>(),
        ["plugin.wasm"],
        "the layer holds plugin.wasm only"
    );
    assert!(
        files["plugin.wasm"] == wasm,
        "plugin.wasm differs from build/locality_failover.wasm"
    );

    // Nothing else in the blob store.
    let referenced: BTreeSet<String> = [
        &manifests[0],
        manifest.get("config").expect("config"),
        &layers[0],
    ]
    .iter()
    .map(|d| s(d, "/digest").trim_start_matches("sha256:").to_string())
    .collect();
    let stored: BTreeSet<String> = std::fs::read_dir(layout.join("blobs/sha256"))
        .expect("blobs")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(
        stored, referenced,
        "blobs/sha256 holds exactly the referenced blobs"
    );

    // The archive: the same layout, files at the top level (oci-archive).
    let archive =
        tar_files(&std::fs::read(dir.path().join("locality-failover-oci.tar")).expect("archive"));
    let mut expected: BTreeSet<String> = ["oci-layout", "index.json"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    expected.extend(stored.iter().map(|d| format!("blobs/sha256/{d}")));
    assert_eq!(archive.keys().cloned().collect::<BTreeSet<_>>(), expected);
    for (name, bytes) in &archive {
        assert!(
            *bytes == file(name),
            "{name} differs between the archive and the layout"
        );
    }

    // Reproducible: the same .wasm gives the same manifest digest.
    let again = TempDir::new("oci").expect("temp dir");
    let out = Command::new("bash")
        .arg(root().join("scripts/oci.sh"))
        .env("OCI_OUT", again.path())
        .output()
        .expect("run scripts/oci.sh");
    assert!(out.status.success());
    assert_eq!(
        std::fs::read(again.path().join("oci/index.json")).expect("index"),
        file("index.json"),
        "the image is reproducible"
    );
}

// ---------------------------------------------------------------------------
// docker-compose and the `make demo` configuration.
