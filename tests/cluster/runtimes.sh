# Runtime images of handler functions (spec.runtime), built from this machine's Debian packages
# and the official AWS Lambda runtime interface clients (RICs) of versions.env. images.sh sources
# it after lib.sh and versions.env, and lambda-zips.sh for the Java jars.
#
# A runtime image runs as uid 65532 and holds no code of a function: the pod fetches it into
# /var/task (read-only) and passes the handler as the container's argument. Everything the
# runtime brings lives in /var/runtime.
#
# Built once, cached under $FARGO_CACHE (default ~/.cache/fargo):
#   ric/awslambdaric-<ver>/                 pip install --target of the Python RIC
#   ric/aws-lambda-ric-node-<ver>/          node_modules of the Node.js RIC (native, built here)
#   ric/aws-lambda-java-<ric>-<core>/lib/   jars of the Java RIC and aws-lambda-java-core
#   runtimes/<runtime>-<key>/               each runtime's root filesystem, keyed by what made it
# A directory is complete when <dir>.done exists beside it.
# shellcheck shell=bash disable=SC2154

cache="${FARGO_CACHE:-$HOME/.cache/fargo}"
jdk=/usr/lib/jvm/java-17-openjdk-amd64
# What the Java runtime's jlink keeps: what the RIC and its serialization need (jdeps), and the
# modules handlers commonly use (HTTP client, JNDI, JMX, XML, EC crypto, zip file systems).
jre_modules=java.base,java.desktop,java.instrument,java.logging,java.management,java.naming
jre_modules+=,java.net.http,java.scripting,java.sql,java.xml,jdk.crypto.ec,jdk.unsupported,jdk.zipfs
# The Java RIC unpacks its JNI library to /tmp unless this property names it; a file of the
# image also loads where /tmp is mounted noexec.
java_jni=/var/runtime/lib/native/libaws-lambda-jni.so

# done_dir DIR: true when DIR was completed (DIR.done, beside it, exists).
done_dir() { [[ -d "$1" && -f "$1.done" ]]; }

# finish_dir TMP DIR: TMP, complete, becomes DIR: a build cut short never looks finished.
finish_dir() {
  rm -rf "$2" "$2.done"
  mv "$1" "$2"
  touch "$2.done"
}

# python_ric: the Python RIC, installed with Debian's python3.11 (the one the image runs).
python_ric() {
  local dir="$cache/ric/awslambdaric-$AWSLAMBDARIC_VERSION"
  done_dir "$dir" && return 0
  log "pip install awslambdaric==$AWSLAMBDARIC_VERSION"
  rm -rf "$dir.tmp"
  # Byte code is compiled in the image, against its own paths.
  /usr/bin/python3.11 -m pip install --quiet --no-cache-dir --no-compile --only-binary=:all: \
    --disable-pip-version-check --root-user-action=ignore --target "$dir.tmp" "awslambdaric==$AWSLAMBDARIC_VERSION"
  finish_dir "$dir.tmp" "$dir"
}

# node_build_tools: what the Node.js RIC's install compiles with (curl's buildconf and configure,
# aws-lambda-cpp's cmake, node-gyp), installed from Debian when missing.
node_build_tools() {
  local tool missing=()
  for tool in cmake:cmake autoreconf:autoconf automake:automake libtoolize:libtool make:make \
    g++:g++ python3:python3; do
    command -v "${tool%%:*}" >/dev/null || missing+=("${tool##*:}")
  done
  ((${#missing[@]} == 0)) && return 0
  log "apt-get install ${missing[*]} (to build aws-lambda-ric)"
  if ! { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
    "${missing[@]}" >/dev/null; }; then
    die "could not install ${missing[*]}; install them and run again"
  fi
}

# node_ric: the Node.js RIC's node_modules. Its install builds curl, aws-lambda-cpp and a native
# addon, some minutes; the sources and objects it leaves are dropped.
node_ric() {
  local dir="$cache/ric/aws-lambda-ric-node-$AWS_LAMBDA_RIC_NODE_VERSION"
  done_dir "$dir" && return 0
  node_build_tools
  log "npm install aws-lambda-ric@$AWS_LAMBDA_RIC_NODE_VERSION (builds native code)"
  rm -rf "$dir.tmp"
  mkdir -p "$dir.tmp"
  (cd "$dir.tmp" && MAKEFLAGS="-j$(nproc)" JOBS=max npm install --no-audit --no-fund \
    --no-save --omit=dev --loglevel=error --prefix "$dir.tmp" \
    "aws-lambda-ric@$AWS_LAMBDA_RIC_NODE_VERSION" >"$dir.tmp/npm.log" 2>&1) ||
    die "npm install aws-lambda-ric failed; see $dir.tmp/npm.log"
  local ric="$dir.tmp/node_modules/aws-lambda-ric"
  [[ -f "$ric/dist/rapid-client.node" ]] || die "aws-lambda-ric built no dist/rapid-client.node"
  rm -rf "$ric/deps" "$ric/build" "$dir.tmp/npm.log"
  finish_dir "$dir.tmp" "$dir"
}

# java_ric: the Java RIC, aws-lambda-java-core and their runtime dependencies, from Maven
# Central through a pom of their own.
java_ric() {
  local dir="$cache/ric/aws-lambda-java-$AWS_LAMBDA_JAVA_RIC_VERSION-$AWS_LAMBDA_JAVA_CORE_VERSION"
  done_dir "$dir" && return 0
  log "mvn: aws-lambda-java-runtime-interface-client $AWS_LAMBDA_JAVA_RIC_VERSION," \
    "aws-lambda-java-core $AWS_LAMBDA_JAVA_CORE_VERSION"
  rm -rf "$dir.tmp"
  mkdir -p "$dir.tmp"
  cat >"$dir.tmp/pom.xml" <<EOF
<project xmlns="http://maven.apache.org/POM/4.0.0">
  <modelVersion>4.0.0</modelVersion>
  <groupId>dev.fargo</groupId>
  <artifactId>runtime-java17</artifactId>
  <version>0</version>
  <packaging>pom</packaging>
  <dependencies>
    <dependency>
      <groupId>com.amazonaws</groupId>
      <artifactId>aws-lambda-java-runtime-interface-client</artifactId>
      <version>$AWS_LAMBDA_JAVA_RIC_VERSION</version>
    </dependency>
    <dependency>
      <groupId>com.amazonaws</groupId>
      <artifactId>aws-lambda-java-core</artifactId>
      <version>$AWS_LAMBDA_JAVA_CORE_VERSION</version>
    </dependency>
  </dependencies>
</project>
EOF
  (cd "$dir.tmp" && mvn -q -B dependency:copy-dependencies -DincludeScope=runtime \
    -DoutputDirectory="$dir.tmp/lib" -Dstyle.color=never >&2) || die "mvn could not fetch the Java RIC"
  finish_dir "$dir.tmp" "$dir"
}

# java_core_jar: the path of the cached aws-lambda-java-core jar, fetched if need be.
java_core_jar() {
  java_ric >&2
  echo "$cache/ric/aws-lambda-java-$AWS_LAMBDA_JAVA_RIC_VERSION-$AWS_LAMBDA_JAVA_CORE_VERSION/lib/aws-lambda-java-core-$AWS_LAMBDA_JAVA_CORE_VERSION.jar"
}

# runtime_base DIR: users, /tmp, CA certificates, an empty /var/task and /var/runtime.
runtime_base() {
  local dir="$1"
  base_files "$dir"
  mkdir -p "$dir/var/task" "$dir/var/runtime" "$dir/etc/ssl/certs"
  cp -L /etc/ssl/certs/ca-certificates.crt "$dir/etc/ssl/certs/"
}

# copy_paths DIR: the files, symbolic links and empty directories named on standard input
# (absolute paths), at the same paths under DIR.
copy_paths() {
  tar -C / --no-recursion -cf - -T <(sed 's,^/,,') | tar -C "$1" -xf -
}

rootfs_python() {
  local dir="$1" ric="$cache/ric/awslambdaric-$AWSLAMBDARIC_VERSION"
  python_ric
  runtime_base "$dir"
  local path
  dpkg-query -L python3.11-minimal libpython3.11-minimal libpython3.11-stdlib |
    while read -r path; do
      [[ "$path" != /usr/share/* && (-L "$path" || -f "$path") ]] && echo "$path"
    done | copy_paths "$dir"
  copy_libs "$dir" "$dir/usr/bin/python3.11" "$dir"/usr/lib/python3.11/lib-dynload/*.so
  cp -a "$ric/." "$dir/var/runtime/"
  local modules
  mapfile -t modules < <(find "$dir/var/runtime" -name '*.so')
  copy_libs "$dir" "${modules[@]}"
  # Byte code of everything, as the image's user cannot write it: checked by hash, not by the
  # sources' times, which the layer sets to 0. The tests' broken sources are not packaged.
  /usr/bin/python3.11 -m compileall -q -j0 --invalidation-mode unchecked-hash -s "$dir" -p / \
    -x '/lib2to3/tests/' "$dir/usr/lib/python3.11" "$dir/var/runtime" >/dev/null ||
    die "compileall failed in $dir"
  # Run from its own files: the interpreter, its standard library and the RIC's native module.
  PYTHONHOME="$dir/usr" PYTHONPATH="$dir/var/runtime" "$dir/usr/bin/python3.11" -S \
    -c 'import awslambdaric.bootstrap, runtime_client' ||
    die "the python3.11 runtime cannot import awslambdaric"
}

rootfs_nodejs() {
  local dir="$1" ric="$cache/ric/aws-lambda-ric-node-$AWS_LAMBDA_RIC_NODE_VERSION"
  node_ric
  runtime_base "$dir"
  mkdir -p "$dir/usr/bin"
  cp /usr/bin/node "$dir/usr/bin/node"
  cp -a "$ric/node_modules" "$dir/var/runtime/"
  local addons
  mapfile -t addons < <(find "$dir/var/runtime" -name '*.node')
  copy_libs "$dir" "$dir/usr/bin/node" "${addons[@]}"
  # The addon reads the Runtime API's address as it loads.
  AWS_LAMBDA_RUNTIME_API=127.0.0.1:9001 node -e 'require(process.argv[1])' \
    "$dir/var/runtime/node_modules/aws-lambda-ric/dist/rapid-client.node" ||
    die "the nodejs20.x runtime's native addon does not load"
}

rootfs_java() {
  local dir="$1" jars
  java_ric >&2
  jars="$cache/ric/aws-lambda-java-$AWS_LAMBDA_JAVA_RIC_VERSION-$AWS_LAMBDA_JAVA_CORE_VERSION/lib"
  runtime_base "$dir"
  mkdir -p "$dir/usr/lib/jvm" "$dir/var/runtime/lib/native"
  # A JRE of the modules handlers use: a quarter of the JDK. Class data sharing makes it start
  # faster.
  "$jdk/bin/jlink" --module-path "$jdk/jmods" --add-modules "$jre_modules" --strip-debug \
    --no-header-files --no-man-pages --generate-cds-archive --output "$dir/usr/lib/jvm/java-17"
  # Run by its own path: its $ORIGIN-relative libraries are not found through a symbolic link.
  cp "$jars"/*.jar "$dir/var/runtime/lib/"
  unzip -p "$jars/aws-lambda-java-runtime-interface-client-$AWS_LAMBDA_JAVA_RIC_VERSION.jar" \
    jni/libaws-lambda-jni.linux-x86_64.so >"$dir$java_jni"
  local jre="$dir/usr/lib/jvm/java-17"
  # The desktop module's graphic libraries (X11, fonts, sound) stay without theirs: handlers run
  # headless.
  copy_libs "$dir" "$jre/bin/java" "$jre/lib/server/libjvm.so" "$dir$java_jni" \
    "$jre"/lib/lib{java,jimage,jli,jsig,net,nio,zip,verify,management,management_ext,prefs,instrument,awt,awt_headless,j2pkcs11,extnet,sctp}.so
}

rootfs_provided() {
  local dir="$1" lib
  runtime_base "$dir"
  mkdir -p "$dir/lib/x86_64-linux-gnu" "$dir/lib64"
  # What a dynamically linked bootstrap (Rust's default, Go with cgo) links against.
  cp -L /lib64/ld-linux-x86-64.so.2 "$dir/lib64/"
  for lib in libc.so.6 libm.so.6 libgcc_s.so.1 libpthread.so.0 libdl.so.2 librt.so.1 \
    libresolv.so.2; do
    cp -L "/lib/x86_64-linux-gnu/$lib" "$dir/lib/x86_64-linux-gnu/"
  done
}

# runtime_key RUNTIME: what a runtime's root filesystem is made of: the recipe and the versions
# of what goes in.
runtime_key() {
  local packages
  case "$1" in
    python) packages="python3.11-minimal libpython3.11-stdlib" ;;
    nodejs) packages=nodejs ;;
    java) packages=openjdk-17-jdk-headless ;;
    provided) packages="libc6 libgcc-s1 ca-certificates" ;;
  esac
  {
    declare -f base_files copy_libs copy_paths runtime_base "rootfs_$1"
    # shellcheck disable=SC2086
    dpkg-query -W $packages
    echo "$AWSLAMBDARIC_VERSION $AWS_LAMBDA_RIC_NODE_VERSION $AWS_LAMBDA_JAVA_RIC_VERSION"
    echo "$AWS_LAMBDA_JAVA_CORE_VERSION $jre_modules $java_jni"
  } | sha256sum | cut -c1-12
}

# runtime_rootfs RUNTIME: prints the directory of the runtime's root filesystem, built if the
# cache has none of this key.
runtime_rootfs() {
  local dir
  dir="$cache/runtimes/$1-$(runtime_key "$1")"
  if ! done_dir "$dir"; then
    log "building the $1 runtime's root filesystem"
    rm -rf "$dir.tmp"
    mkdir -p "$dir.tmp"
    "rootfs_$1" "$dir.tmp" >&2
    finish_dir "$dir.tmp" "$dir"
  fi
  echo "$dir"
}
