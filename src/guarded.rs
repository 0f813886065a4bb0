//! Watching objects that may not deserialize: [`watcher`] gives each as kube's
//! [`DeserializeGuard`], the object or why it did not parse (with its metadata), so that one bad
//! object never stalls a watch, read in one pass.
//!
//! kube's own `DeserializeGuard` reads an object into a tree of values, clones the tree, then
//! reads the type from the clone, so that it can read the metadata from the tree when the type
//! fails. Here the object's JSON is kept as it came, unparsed (the parser only finds where it
//! ends), and read as the type once; only an object that fails is read again, for its metadata.

use std::borrow::Cow;
use std::fmt::Debug;

use futures::{Stream, TryStreamExt};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::api::Api;
use kube::core::error_boundary::InvalidObject;
use kube::core::{DeserializeGuard, PartialObjectMeta};
use kube::runtime::watcher::{self, Event};
use kube::{Client, Resource};
use serde::de::{DeserializeOwned, Error as _};
use serde::{Deserialize, Deserializer};
use serde_json::value::RawValue;

/// Every object of kind `K` in the cluster that `config` selects, each as a
/// [`DeserializeGuard`]; as kube's [`watcher::watcher`] of `Api<DeserializeGuard<K>>`.
pub fn watcher<K>(
    client: Client,
    config: watcher::Config,
) -> impl Stream<Item = watcher::Result<Event<DeserializeGuard<K>>>> + Send
where
    K: Resource<DynamicType = ()> + Clone + Debug + DeserializeOwned + Send + Sync + 'static,
{
    watcher::watcher(Api::<OnePass<K>>::all(client), config).map_ok(|event| match event {
        Event::Apply(object) => Event::Apply(object.0),
        Event::Delete(object) => Event::Delete(object.0),
        Event::Init => Event::Init,
        Event::InitApply(object) => Event::InitApply(object.0),
        Event::InitDone => Event::InitDone,
    })
}

/// A `K`, or why it did not deserialize, read in one pass (see the module's doc). It reads
/// from JSON only, which is all the API server sends kube.
#[derive(Clone, Debug)]
struct OnePass<K>(DeserializeGuard<K>);

impl<'de, K: DeserializeOwned> Deserialize<'de> for OnePass<K> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let raw = Box::<RawValue>::deserialize(deserializer)?;
        let read = match serde_json::from_str::<K>(raw.get()) {
            Ok(object) => Ok(object),
            Err(error) => {
                let PartialObjectMeta::<K> { metadata, .. } =
                    serde_json::from_str(raw.get()).map_err(D::Error::custom)?;
                Err(InvalidObject {
                    error: error.to_string(),
                    metadata,
                })
            }
        };
        Ok(OnePass(DeserializeGuard(read)))
    }
}

impl<K: Resource> Resource for OnePass<K> {
    type DynamicType = K::DynamicType;
    type Scope = K::Scope;

    fn kind(dt: &Self::DynamicType) -> Cow<'_, str> {
        K::kind(dt)
    }

    fn group(dt: &Self::DynamicType) -> Cow<'_, str> {
        K::group(dt)
    }

    fn version(dt: &Self::DynamicType) -> Cow<'_, str> {
        K::version(dt)
    }

    fn plural(dt: &Self::DynamicType) -> Cow<'_, str> {
        K::plural(dt)
    }

    fn meta(&self) -> &ObjectMeta {
        self.0.meta()
    }

    fn meta_mut(&mut self) -> &mut ObjectMeta {
        self.0.meta_mut()
    }
}

#[cfg(test)]
mod tests;
