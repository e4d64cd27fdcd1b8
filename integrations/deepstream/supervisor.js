'use strict'
/**
 * The supervised mode of swarm-clusternode: the plugin runs its own `python -m swarm node`, so that a
 * deepstream operator runs one process per server, as with clusternode-redis.
 *
 * - The node gets deepstream's `serverName`, the `host`, `port` and `seeds` of the plugin's options, and
 *   the further swarm options of `swarm`, in a config file in a private directory (mkdtemp: mode 0700).
 * - Its bridge is a unix socket in that directory: only this user can reach it, so the bridge needs no
 *   token (it has no authentication of its own).
 * - The node prints `bridge <path>` once the bridge listens (swarm's cli): the plugin connects then.
 * - If the node dies, it is started again after restartDelay, doubling per quick death up to
 *   maxRestartDelay; a node that ran stableAfter ms before dying starts the count again.
 * - `stop()` sends SIGTERM (the node leaves its cluster cleanly), SIGKILL after stopTimeout, and removes
 *   the directory. A node never outlives its deepstream process: it runs with swarm's `exitOnStdinClose`
 *   and a pipe on its stdin, which the kernel closes however deepstream dies (even by SIGKILL); on a
 *   plain `process.exit()` the node is also sent SIGTERM at once. Only the directory outlives a killed
 *   deepstream; it names its owner (`deepstream.pid`), and the next start removes those of dead owners.
 *
 * Only Node built-ins are used.
 */

const { spawn } = require('child_process')
const { EventEmitter } = require('events')
const fs = require('fs')
const os = require('os')
const path = require('path')
const readline = require('readline')

const SUPERVISED_DEFAULTS = {
  // the Python that has swarm installed: a command name on PATH, a path, or [command, ...arguments]
  python: 'python3',
  // swarm's own defaults: loopback, so that nothing is exposed unless asked for; its usual port
  host: '127.0.0.1',
  port: 6021,
  seeds: [],
  swarm: {},
  env: {},
  // swarm's --log-level: its warnings and errors reach deepstream's log, its chatter does not
  logLevel: 'WARNING',
  // where the private directory is made; the socket path must stay within 107 bytes (sun_path)
  runtimeDirectory: os.tmpdir(),
  // ms: a node that died is started again after restartDelay, doubled per quick death up to
  // maxRestartDelay, so a node that cannot start costs a line every 5 s rather than a busy loop
  restartDelay: 100,
  maxRestartDelay: 5000,
  // ms a node must have run to count as stable: its death then restarts it after restartDelay again
  stableAfter: 10000,
  // ms between SIGTERM (the node leaves its cluster, which takes well under a second) and SIGKILL
  stopTimeout: 5000
}

const SUPERVISED_NUMBERS = ['restartDelay', 'maxRestartDelay', 'stableAfter', 'stopTimeout']

// swarm options the plugin sets itself; `swarm` may not give them
const OWNED_SWARM_KEYS = {
  serverName: 'it is deepstream\'s serverName',
  bridge: 'the plugin gives the node a private unix socket',
  exitOnStdinClose: 'the plugin always sets it, so that the node dies with deepstream',
  host: 'use the option "host"',
  port: 'use the option "port"',
  seedNodes: 'use the option "seeds"'
}

const LOG_LEVELS = ['DEBUG', 'INFO', 'WARNING', 'ERROR']
const UNIX_PATH_MAX = 107
const SOCKET_NAME = 'bridge.sock'
const OWNER_FILE = 'deepstream.pid'
const DIRECTORY_PREFIX = 'swarm-clusternode-'
// the stderr lines kept to say why a node exited
const TAIL_LINES = 10

function fail (key, expected, value) {
  throw new Error(`swarm-clusternode: option "${key}" must be ${expected}, got ${JSON.stringify(value)}`)
}

function isPlainObject (value) {
  return value !== null && typeof value === 'object' && !Array.isArray(value)
}

/**
 * The supervised mode's options, checked: every error names its key. `options` is deepstream's
 * `clusterNode.options`; `serverName` is deepstream's.
 */
function parseSupervisedOptions (options, serverName) {
  const parsed = { ...SUPERVISED_DEFAULTS }
  if (typeof serverName !== 'string' || serverName.length === 0) {
    throw new Error(`swarm-clusternode: deepstream's serverName must be set to run a swarm node, got ${JSON.stringify(serverName)}`)
  }
  parsed.serverName = serverName

  if (options.python !== undefined) {
    const python = typeof options.python === 'string' ? [options.python] : options.python
    if (!Array.isArray(python) || python.length === 0 ||
        !python.every((part) => typeof part === 'string' && part.length > 0)) {
      fail('python', 'a command (a non-empty string) or a non-empty list of strings (command and arguments)', options.python)
    }
    parsed.python = python
  } else {
    parsed.python = [SUPERVISED_DEFAULTS.python]
  }
  if (options.host !== undefined) {
    if (typeof options.host !== 'string' || options.host.length === 0) {
      fail('host', 'the address the swarm node listens on, a non-empty string', options.host)
    }
    parsed.host = options.host
  }
  if (options.port !== undefined) {
    if (!Number.isInteger(options.port) || options.port < 0 || options.port > 65535) {
      fail('port', 'the swarm node\'s TCP port, an integer in 0..65535', options.port)
    }
    parsed.port = options.port
  }
  if (options.seeds !== undefined) {
    if (!Array.isArray(options.seeds)) {
      fail('seeds', 'a list of "host:port" strings (the swarm nodes of other servers)', options.seeds)
    }
    for (const seed of options.seeds) {
      const match = typeof seed === 'string' && /^(\[[^\]]+\]|[^:\s[\]]+):(\d+)$/.exec(seed)
      if (!match || Number(match[2]) < 1 || Number(match[2]) > 65535) {
        fail('seeds', 'a list of "host:port" strings (port 1..65535); this entry is not one', seed)
      }
    }
    parsed.seeds = options.seeds.slice()
  }
  if (options.swarm !== undefined) {
    if (!isPlainObject(options.swarm)) {
      fail('swarm', 'a mapping of further swarm options (swarm\'s docs/configuration.md)', options.swarm)
    }
    for (const key of Object.keys(options.swarm)) {
      if (OWNED_SWARM_KEYS[key]) {
        throw new Error(`swarm-clusternode: option "swarm.${key}" cannot be set: ${OWNED_SWARM_KEYS[key]}`)
      }
    }
    parsed.swarm = { ...options.swarm }
  }
  if (options.env !== undefined) {
    if (!isPlainObject(options.env) || !Object.values(options.env).every((v) => typeof v === 'string')) {
      fail('env', 'a mapping of environment variable names to strings', options.env)
    }
    parsed.env = { ...options.env }
  }
  if (options.logLevel !== undefined) {
    if (!LOG_LEVELS.includes(options.logLevel)) {
      fail('logLevel', `one of ${LOG_LEVELS.join(', ')}`, options.logLevel)
    }
    parsed.logLevel = options.logLevel
  }
  if (options.runtimeDirectory !== undefined) {
    if (typeof options.runtimeDirectory !== 'string' || options.runtimeDirectory.length === 0) {
      fail('runtimeDirectory', 'a directory path', options.runtimeDirectory)
    }
    parsed.runtimeDirectory = options.runtimeDirectory
  }
  parsed.runtimeDirectory = path.resolve(parsed.runtimeDirectory)
  const longest = path.join(parsed.runtimeDirectory, `${DIRECTORY_PREFIX}XXXXXX`, SOCKET_NAME)
  if (Buffer.byteLength(longest) > UNIX_PATH_MAX) {
    fail('runtimeDirectory', `a directory whose path leaves room for the bridge socket (${longest} is over ` +
      `${UNIX_PATH_MAX} bytes)`, options.runtimeDirectory)
  }
  for (const key of SUPERVISED_NUMBERS) {
    if (options[key] !== undefined) {
      const value = Number(options[key])
      if (typeof options[key] === 'boolean' || !Number.isFinite(value) || value <= 0) {
        fail(key, 'a positive number of milliseconds', options[key])
      }
      parsed[key] = value
    }
  }
  if (parsed.maxRestartDelay < parsed.restartDelay) {
    fail('maxRestartDelay', `at least restartDelay (${parsed.restartDelay})`, parsed.maxRestartDelay)
  }
  return parsed
}

function processAlive (pid) {
  try {
    process.kill(pid, 0)
    return true
  } catch (error) {
    return error.code === 'EPERM' // alive, another user's
  }
}

/** swarm's log level names -> deepstream's logger methods. */
function loggerLevel (level) {
  switch (level) {
    case 'DEBUG': return 'debug'
    case 'INFO': return 'info'
    case 'WARNING': return 'warn'
    default: return 'error'
  }
}

/**
 * Runs one `python -m swarm node` at a time and starts it again when it dies.
 * Events: 'bridge' (path) once the node's bridge listens; 'exit' when the node died (it is restarted).
 */
class NodeSupervisor extends EventEmitter {
  /**
   * @param {object} settings  parseSupervisedOptions' result
   * @param {function} log     (level, text): deepstream's logger
   */
  constructor (settings, log) {
    super()
    this.settings = settings
    this.log = log
    this.directory = null
    this.socketPath = null
    this.child = null
    this.pid = null
    this.startedAt = 0
    this.quickDeaths = 0
    this.restartTimer = null
    this.stopping = false
    this.bridgeUp = false // the running node said `bridge`: connecting to it can work
    this.onProcessExit = () => this._killNow()
  }

  /** Makes the private directory and its config file, and starts the node. */
  start () {
    const settings = this.settings
    fs.mkdirSync(settings.runtimeDirectory, { recursive: true })
    this._removeOrphans()
    // mkdtemp makes the directory with mode 0700: nobody else can reach the socket inside
    this.directory = fs.mkdtempSync(path.join(settings.runtimeDirectory, DIRECTORY_PREFIX))
    fs.chmodSync(this.directory, 0o700)
    this.socketPath = path.join(this.directory, SOCKET_NAME)
    this.configPath = path.join(this.directory, 'swarm.json')
    fs.writeFileSync(path.join(this.directory, OWNER_FILE), `${process.pid}\n`, { mode: 0o600 })
    const options = {
      // JSON lines, so that each keeps its level in deepstream's log; `swarm.logFormat` may say otherwise
      logFormat: 'json',
      ...settings.swarm,
      host: settings.host,
      port: settings.port,
      seedNodes: settings.seeds,
      bridge: this.socketPath,
      exitOnStdinClose: true
    }
    const document = { serverName: settings.serverName, plugins: { message: { type: 'direct', options } } }
    // JSON is YAML: swarm's config loader reads it
    fs.writeFileSync(this.configPath, JSON.stringify(document, null, 2) + '\n', { mode: 0o600 })
    process.on('exit', this.onProcessExit)
    this._spawn()
  }

  _spawn () {
    this.restartTimer = null
    if (this.stopping) {
      return
    }
    const settings = this.settings
    const [command, ...prefix] = settings.python
    const argv = [...prefix, '-m', 'swarm', 'node', '--config', this.configPath, '--log-level', settings.logLevel]
    const child = spawn(command, argv, {
      env: { ...process.env, PYTHONUNBUFFERED: '1', ...settings.env },
      // stdin: the pipe whose end tells the node that deepstream is gone (exitOnStdinClose)
      stdio: ['pipe', 'pipe', 'pipe'],
      // its own process group: a Ctrl-C in deepstream's terminal reaches deepstream, which stops the node
      // in order, rather than both at once (and the node restarted before deepstream closes)
      detached: true
    })
    this.child = child
    this.pid = child.pid
    this.startedAt = Date.now()
    this.bridgeUp = false
    child.tail = []
    child.done = false
    child.stdin.on('error', () => {}) // EPIPE once the node is gone: nothing to do
    if (child.pid !== undefined) {
      this.log('info', `swarm node ${settings.serverName} started (pid ${child.pid}, bridge ${this.socketPath}, ` +
        `listening on ${settings.host}:${settings.port}, seeds ${JSON.stringify(settings.seeds)})`)
    }
    readline.createInterface({ input: child.stdout }).on('line', (line) => this._onStdout(child, line))
    readline.createInterface({ input: child.stderr }).on('line', (line) => this._onStderr(child, line))
    child.on('error', (error) => {
      // the command cannot be run (ENOENT, EACCES): 'exit' may never come
      child.spawnError = error
      if (child.pid === undefined) {
        this._onExit(child, null, null)
      }
    })
    child.on('exit', (code, signal) => this._onExit(child, code, signal))
  }

  _onStdout (child, line) {
    if (child !== this.child) {
      return
    }
    if (line.startsWith('bridge ')) {
      this.bridgeUp = true
      this.emit('bridge', line.slice('bridge '.length))
    } else if (line.startsWith('listening ')) {
      this.log('info', `swarm node ${this.settings.serverName} (pid ${child.pid}) ${line}`)
    } else if (!line.startsWith('ready ')) {
      this.log('info', `swarm node ${this.settings.serverName}: ${line}`)
    }
  }

  _onStderr (child, line) {
    child.tail.push(line)
    if (child.tail.length > TAIL_LINES) {
      child.tail.shift()
    }
    let entry = null
    try {
      entry = JSON.parse(line)
    } catch (error) {
      entry = null
    }
    if (entry && typeof entry === 'object' && typeof entry.message === 'string') {
      const exception = entry.exception ? `\n${entry.exception}` : ''
      this.log(loggerLevel(entry.level), `swarm node ${this.settings.serverName}: ${entry.message}${exception}`)
    } else {
      // a traceback, a `swarm: error: ...` line, or logFormat text
      this.log('warn', `swarm node ${this.settings.serverName}: ${line}`)
    }
  }

  _onExit (child, code, signal) {
    if (child.done) {
      return
    }
    child.done = true
    if (child !== this.child) {
      return
    }
    this.child = null
    this.bridgeUp = false
    if (child.exitWaiter) {
      child.exitWaiter()
    }
    if (this.stopping) {
      return
    }
    const settings = this.settings
    const ranFor = Date.now() - this.startedAt
    if (ranFor >= settings.stableAfter) {
      this.quickDeaths = 0
    }
    const delay = Math.min(settings.maxRestartDelay, settings.restartDelay * Math.pow(2, this.quickDeaths))
    this.quickDeaths += 1
    let how
    if (child.spawnError) {
      how = `could not be started (option "python" is ${JSON.stringify(settings.python)}): ${child.spawnError.message}`
    } else if (signal) {
      how = `(pid ${child.pid}) was killed by ${signal} after ${(ranFor / 1000).toFixed(1)} s`
    } else {
      how = `(pid ${child.pid}) exited with status ${code} after ${(ranFor / 1000).toFixed(1)} s` +
        (code === 2 ? ' (swarm refused its configuration)' : '') +
        (code === 3 ? ' (another live process holds its serverName)' : '')
    }
    const tail = !signal && child.tail.length ? `; its last lines:\n${child.tail.join('\n')}` : ''
    this.log(code === 2 || child.spawnError ? 'error' : 'warn',
      `swarm node ${settings.serverName} ${how}; starting it again in ${delay} ms${tail}`)
    this.emit('exit')
    this.restartTimer = setTimeout(() => this._spawn(), delay)
  }

  /** SIGTERM, SIGKILL after stopTimeout; then the private directory is removed. Resolves when done. */
  async stop () {
    this.stopping = true
    clearTimeout(this.restartTimer)
    this.restartTimer = null
    process.removeListener('exit', this.onProcessExit)
    const child = this.child
    if (child && !child.done) {
      const exited = new Promise((resolve) => { child.exitWaiter = resolve })
      child.kill('SIGTERM')
      let timer
      const late = await Promise.race([exited.then(() => false), new Promise((resolve) => {
        timer = setTimeout(() => resolve(true), this.settings.stopTimeout)
      })])
      clearTimeout(timer)
      if (late) {
        this.log('warn', `swarm node ${this.settings.serverName} (pid ${child.pid}) did not stop within ` +
          `${this.settings.stopTimeout} ms of SIGTERM: SIGKILL`)
        child.kill('SIGKILL')
        await exited
      }
    }
    this._removeDirectory()
  }

  /** At process exit (no time left for anything asynchronous): SIGTERM the node, remove the directory. */
  _killNow () {
    this.stopping = true
    clearTimeout(this.restartTimer)
    if (this.child && !this.child.done) {
      try {
        this.child.kill('SIGTERM')
      } catch (error) {
        // gone already
      }
    }
    this._removeDirectory()
  }

  /**
   * Removes the directories that killed deepstream processes left (SIGKILL, or SIGTERM, which
   * `deepstream start` does not handle): those whose owner's pid is gone. A directory without an owner
   * file yet may be another plugin's being made: it is left alone.
   */
  _removeOrphans () {
    const root = this.settings.runtimeDirectory
    let names
    try {
      names = fs.readdirSync(root).filter((name) => name.startsWith(DIRECTORY_PREFIX))
    } catch (error) {
      return
    }
    for (const name of names) {
      const directory = path.join(root, name)
      let owner
      try {
        owner = Number(fs.readFileSync(path.join(directory, OWNER_FILE), 'utf8'))
      } catch (error) {
        continue // not ours to judge (another user's, or not written yet)
      }
      // a socket there may be a live node of another pid namespace (a runtimeDirectory shared between
      // containers): a node that exited removed its socket, one killed with SIGKILL did not
      if (!Number.isInteger(owner) || owner <= 0 || processAlive(owner) ||
          fs.existsSync(path.join(directory, SOCKET_NAME))) {
        continue
      }
      fs.rmSync(directory, { recursive: true, force: true })
      this.log('info', `removed ${directory}, left by deepstream process ${owner}, which is gone`)
    }
  }

  _removeDirectory () {
    if (this.directory) {
      fs.rmSync(this.directory, { recursive: true, force: true })
    }
  }
}

module.exports = { NodeSupervisor, parseSupervisedOptions, SUPERVISED_DEFAULTS, OWNED_SWARM_KEYS }
