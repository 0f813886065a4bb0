//! The photo-resize example (`examples/photo-resize`) for tests and benchmarks: the function
//! with its code from the tests' S3 server and its photos in a versitygw pod, and Pillow (from
//! the example's own bundle) to make images and measure thumbnails.

use std::path::Path;
use std::process::Command;

use k8s_openapi::api::core::v1::Secret;
use kube::Client;
use kube::api::{Api, Patch, PatchParams};
use serde::Deserialize;
use serde_json::{Value, json};

use super::functions::{apply_function, wait_function_condition};
use super::s3::{ACCESS_KEY, BUCKET, S3Pod, SECRET_KEY, Scratch};

/// `python3.11` with the photo-resize bundle (Pillow) on its path.
pub struct Pillow {
    dir: std::path::PathBuf,
}

impl Pillow {
    pub fn new(scratch: &Scratch) -> Self {
        let dir = scratch.dir("bundle");
        let zip = super::s3::example_zip("photo-resize.zip");
        let mut archive = zip::ZipArchive::new(std::io::Cursor::new(zip)).unwrap();
        archive.extract(&dir).expect("unpacking photo-resize.zip");
        Pillow { dir }
    }

    pub fn run(&self, script: &str, args: &[&str]) -> String {
        let output = Command::new("python3.11")
            .arg("-c")
            .arg(script)
            .args(args)
            .env("PYTHONPATH", &self.dir)
            .output()
            .expect("running python3.11 (the python runtime's build needs it too)");
        assert!(
            output.status.success(),
            "python3.11 failed: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        String::from_utf8(output.stdout).unwrap()
    }

    /// Writes a `width`×`height` image in the format its file name says.
    pub fn image(&self, path: &Path, width: u32, height: u32) {
        self.run(
            "import sys\nfrom PIL import Image\nw, h = int(sys.argv[2]), int(sys.argv[3])\n\
             Image.new('RGB', (w, h), (200, 80, 40)).save(sys.argv[1])",
            &[
                path.to_str().unwrap(),
                &width.to_string(),
                &height.to_string(),
            ],
        );
    }

    /// `(format, width, height)` of an image.
    pub fn size_of(&self, bytes: &[u8], scratch: &Path) -> (String, u32, u32) {
        let path = scratch.join(format!("probe-{}", fargo::api::lambda::request_id()));
        std::fs::write(&path, bytes).unwrap();
        let out = self.run(
            "import sys\nfrom PIL import Image\nim = Image.open(sys.argv[1])\n\
             print(im.format, im.size[0], im.size[1])",
            &[path.to_str().unwrap()],
        );
        let mut parts = out.split_whitespace();
        (
            parts.next().unwrap().to_string(),
            parts.next().unwrap().parse().unwrap(),
            parts.next().unwrap().parse().unwrap(),
        )
    }
}

/// The photo-resize function of `examples/photo-resize/function.yaml`, in `namespace`, with
/// its code from the tests' S3 server and its photos in `s3`.
pub async fn photo_resize(
    client: &Client,
    namespace: &str,
    s3: &S3Pod,
    photos: &str,
    extra: Value,
) {
    let secret: Secret = serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "Secret",
        "metadata": {"name": "photos-s3"},
        "stringData": {
            "AWS_ACCESS_KEY_ID": ACCESS_KEY,
            "AWS_SECRET_ACCESS_KEY": SECRET_KEY,
            "AWS_ENDPOINT_URL_S3": s3.endpoint,
        },
    }))
    .unwrap();
    // Applied: a second call (another scale) finds it there.
    Api::<Secret>::namespaced(client.clone(), namespace)
        .patch(
            "photos-s3",
            &PatchParams::apply("fargo-test").force(),
            &Patch::Apply(&secret),
        )
        .await
        .unwrap();
    let example = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/examples/photo-resize/function.yaml"
    ))
    .unwrap();
    let function = serde_yaml::Deserializer::from_str(&example)
        .map(|document| serde_yaml::Value::deserialize(document).unwrap())
        .find(|document| document["kind"] == "ServerlessFunction")
        .expect("the example's ServerlessFunction");
    let mut spec: Value = serde_json::to_value(&function["spec"]).unwrap();
    // The code from the tests' S3 server (the controller's --s3-endpoint), its photos here.
    spec["code"]["s3"] =
        json!({"bucket": BUCKET, "key": "photo-resize.zip", "secretName": "fargo-s3"});
    spec["env"] = json!([{"name": "THUMBNAIL_BUCKET", "value": format!("{photos}-thumbnails")}]);
    for trigger in spec["triggers"]["storage"].as_array_mut().unwrap() {
        trigger["bucket"] = photos.into();
    }
    let warm = extra["scale"]["min"].as_i64().is_some_and(|min| min > 0);
    if let (Some(spec), Value::Object(extra)) = (spec.as_object_mut(), extra) {
        spec.extend(extra);
    }
    apply_function(client, namespace, "photo-resize", spec).await;
    let reason = if warm { "Serving" } else { "ScaledToZero" };
    wait_function_condition(
        client,
        namespace,
        "photo-resize",
        ("Ready", "True", reason),
        120,
    )
    .await;
}
