//! Spin's `spin:key-value/key-value@3.0.0` and `spin:variables/variables@3.0.0`
//! for the test host. Every store label names the same in-memory map (the
//! app uses one store), saved as JSON after each write when a file is given.

use crate::Host;
use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use wasmtime::component::{
    Accessor, FutureReader, HasData, Linker, Resource, ResourceTable, StreamReader,
};
use wasmtime::Result;

mod bindings {
    wasmtime::component::bindgen!({
        path: "wit",
        world: "spin-host",
        imports: { default: async | store },
        with: { "spin:key-value/key-value.store": super::StoreHandle },
    });
}

use bindings::spin::key_value::key_value::{self, Error as KvError};
use bindings::spin::variables::variables::{self, Error as VarError};

/// An open store, as the guest holds it.
pub struct StoreHandle;

/// The key-value data, shared by every request.
#[derive(Clone)]
pub struct Kv {
    map: Arc<Mutex<BTreeMap<String, Vec<u8>>>>,
    file: Option<PathBuf>,
}

impl Kv {
    pub fn open(file: Option<PathBuf>) -> Result<Self> {
        let map = match &file {
            Some(path) if path.exists() => {
                let saved: BTreeMap<String, String> =
                    serde_json::from_slice(&std::fs::read(path)?)?;
                saved
                    .into_iter()
                    .map(|(k, v)| (k, v.into_bytes()))
                    .collect()
            }
            _ => BTreeMap::new(),
        };
        Ok(Self {
            map: Arc::new(Mutex::new(map)),
            file,
        })
    }

    fn save(&self, map: &BTreeMap<String, Vec<u8>>) -> Result<(), KvError> {
        let Some(path) = &self.file else {
            return Ok(());
        };
        let text: BTreeMap<&String, String> = map
            .iter()
            .map(|(k, v)| (k, String::from_utf8_lossy(v).into_owned()))
            .collect();
        let bytes = serde_json::to_vec(&text).map_err(|e| KvError::Other(e.to_string()))?;
        let tmp = path.with_extension("tmp");
        std::fs::write(&tmp, bytes)
            .and_then(|()| std::fs::rename(&tmp, path))
            .map_err(|e| KvError::Other(e.to_string()))
    }
}

pub struct SpinState {
    kv: Kv,
    vars: Arc<HashMap<String, String>>,
}

impl SpinState {
    pub fn new(kv: Kv, vars: Arc<HashMap<String, String>>) -> Self {
        Self { kv, vars }
    }
}

/// The view the Spin interfaces get of a store's data.
pub struct SpinView<'a> {
    state: &'a mut SpinState,
    table: &'a mut ResourceTable,
}

pub struct Spin;

impl HasData for Spin {
    type Data<'a> = SpinView<'a>;
}

fn view(host: &mut Host) -> SpinView<'_> {
    SpinView {
        state: &mut host.spin,
        table: &mut host.table,
    }
}

pub fn add_to_linker(linker: &mut Linker<Host>) -> Result<()> {
    key_value::add_to_linker::<Host, Spin>(linker, view)?;
    variables::add_to_linker::<Host, Spin>(linker, view)?;
    Ok(())
}

fn kv<T>(accessor: &Accessor<T, Spin>) -> Kv {
    accessor.with(|mut a| a.get().state.kv.clone())
}

impl key_value::Host for SpinView<'_> {}
impl key_value::HostStore for SpinView<'_> {}

impl<T> key_value::HostStoreWithStore<T> for Spin {
    async fn open(
        accessor: &Accessor<T, Self>,
        _label: String,
    ) -> Result<Resource<StoreHandle>, KvError> {
        accessor.with(|mut a| {
            a.get()
                .table
                .push(StoreHandle)
                .map_err(|_| KvError::StoreTableFull)
        })
    }

    async fn get(
        accessor: &Accessor<T, Self>,
        _store: Resource<StoreHandle>,
        key: String,
    ) -> Result<Option<Vec<u8>>, KvError> {
        let kv = kv(accessor);
        let value = kv.map.lock().unwrap().get(&key).cloned();
        Ok(value)
    }

    async fn set(
        accessor: &Accessor<T, Self>,
        _store: Resource<StoreHandle>,
        key: String,
        value: Vec<u8>,
    ) -> Result<(), KvError> {
        let kv = kv(accessor);
        let mut map = kv.map.lock().unwrap();
        map.insert(key, value);
        kv.save(&map)
    }

    async fn delete(
        accessor: &Accessor<T, Self>,
        _store: Resource<StoreHandle>,
        key: String,
    ) -> Result<(), KvError> {
        let kv = kv(accessor);
        let mut map = kv.map.lock().unwrap();
        map.remove(&key);
        kv.save(&map)
    }

    async fn exists(
        accessor: &Accessor<T, Self>,
        _store: Resource<StoreHandle>,
        key: String,
    ) -> Result<bool, KvError> {
        let kv = kv(accessor);
        let exists = kv.map.lock().unwrap().contains_key(&key);
        Ok(exists)
    }

    async fn get_keys(
        accessor: &Accessor<T, Self>,
        _store: Resource<StoreHandle>,
    ) -> (StreamReader<String>, FutureReader<Result<(), KvError>>) {
        let kv = kv(accessor);
        let keys: Vec<String> = kv.map.lock().unwrap().keys().cloned().collect();
        accessor.with(|mut a| {
            // The engine has concurrency support on, so these cannot fail.
            let stream = StreamReader::new(&mut a, keys).expect("a host stream");
            let done = FutureReader::new(&mut a, async { Ok::<_, wasmtime::Error>(Ok(())) })
                .expect("a host future");
            (stream, done)
        })
    }

    async fn drop(
        accessor: &Accessor<T, Self>,
        rep: Resource<StoreHandle>,
    ) -> wasmtime::Result<()> {
        accessor.with(|mut a| {
            a.get().table.delete(rep)?;
            Ok(())
        })
    }
}

impl variables::Host for SpinView<'_> {}

impl<T> variables::HostWithStore<T> for Spin {
    async fn get(accessor: &Accessor<T, Self>, name: String) -> Result<String, VarError> {
        accessor.with(|mut a| {
            a.get()
                .state
                .vars
                .get(&name)
                .cloned()
                .ok_or(VarError::Undefined(name))
        })
    }
}
