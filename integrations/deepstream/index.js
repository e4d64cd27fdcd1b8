'use strict'
/**
 * swarm-clusternode: deepstream 7's pluggable cluster node over a swarm node's bridge.
 *
 * Two modes, chosen by `clusterNode.options`:
 * - supervised (no `bridge` option): the plugin runs its own `python -m swarm node` (supervisor.js) and
 *   talks to it over a unix socket in a private directory; one process to run per deepstream server;
 * - sidecar (`bridge` given): the node is started separately, and the plugin connects to its bridge.
 *
 * deepstream constructs it as `new SwarmClusterNode(options, services, config)` from
 * `clusterNode: { path, options }`, calls `init()`, then waits on `whenReady()`; its services call
 * `send`, `sendDirect` and `subscribe`, and `close()` on shutdown.
 *
 * The bridge (see swarm's docs/bridge.md): frames of a 4-byte big-endian length and one UTF-8 JSON object.
 *   plugin  -> sidecar  {"op":"hello","version":1,"client":"..."}            first, on every connection
 *                       {"op":"subscribe","topic":<int|str>}
 *                       {"op":"send","message":{...}}                       swarm's topic is message.topic
 *                       {"op":"send_direct","server":"<name>","message":{...}}
 *   sidecar -> plugin   {"op":"welcome","version":1,"serverName":"...","ready":bool}
 *                       {"op":"ready"}
 *                       {"op":"message","origin":"<serverName>","message":{...}}
 *                       {"op":"error","code":"...","text":"..."}
 *                       {"op":"dropped","total":n,"origins":{"<serverName>":n},"text":"..."}  messages the
 *                         sidecar dropped for this plugin while it did not read fast enough (logged here)
 *                       {"op":"peer","server":"<serverName>","event":"left"|"lost","text":"..."}
 *
 * Only Node built-ins are used.
 */

const net = require('net')
const { EventEmitter } = require('events')
const { NodeSupervisor, parseSupervisedOptions, SUPERVISED_DEFAULTS } = require('./supervisor')

// deepstream's TOPIC.CLUSTER and CLUSTER_ACTION.REMOVE (@deepstream/protobuf), for the leave fix in _onMessage
const TOPIC_CLUSTER = 9
const CLUSTER_REMOVE = 1

const PROTOCOL_VERSION = 1
const PACKAGE_VERSION = '0.1.0'

const DEFAULTS = {
  // milliseconds before the first reconnection attempt; doubles per failed attempt up to the maximum
  reconnectInterval: 200,
  maxReconnectInterval: 5000,
  // the sidecar must answer `hello` with `welcome` within this many milliseconds
  handshakeTimeout: 5000,
  // bound of the messages waiting for the sidecar (disconnected, not ready, or pacing this server because
  // its cluster takes them slower than they come); past either bound the OLDEST waiting messages are
  // dropped, counted and logged with exact numbers. deepstream's send() cannot wait, so a burst waits
  // here: 64 MiB (the sidecar's own bound for a slow subscriber, NATS's pending-bytes limit) holds
  // 200,000 events of 100 B, which ioredis would have buffered too.
  maxQueuedMessages: 1000000,
  maxQueuedBytes: 64 * 1024 * 1024,
  // how often (ms) drops are reported at most, each report with the exact count since the last one
  dropReportInterval: 1000,
  // whenReady resolves once the node is ready, or after this many ms anyway: deepstream then starts
  // without its cluster for now (messages wait in the bounded queue above) instead of failing its start.
  // deepstream's `deepstream start` exits with code 1 when a plugin is not ready within its
  // `dependencyInitializationTimeout`, whatever `exitOnFatalError` says; the default is 3/4 of that
  // timeout, so that a node slower to start than deepstream allows never stops deepstream from starting.
  // Set it above that timeout to keep deepstream from starting without its cluster.
  readyTimeout: undefined,
  // largest frame body (bytes of JSON) either way: the sidecar's limit, its `maxMessageSize` (1 MiB by
  // default) + 64 KiB. A bigger message is not sent (the sidecar would drop the connection for it) but
  // logged and dropped; a bigger frame from the sidecar is a protocol error (the connection is reset).
  maxFrameSize: 1024 * 1024 + 64 * 1024,
  // bytes handed to the socket before waiting for it to drain
  socketHighWater: 1024 * 1024,
  // how long close() waits for the sidecar to take the last frames
  closeTimeout: 2000
}

// the keys of either mode besides DEFAULTS; any other key is refused (a misspelt key would be ignored)
const SIDECAR_KEYS = ['bridge']
const SUPERVISED_KEYS = Object.keys(SUPERVISED_DEFAULTS)
const COMMON_KEYS = ['client']

// deepstream's EVENT names (from @deepstream/types), as strings so that no dependency is needed
const EVENT = {
  INFO: 'INFO',
  PLUGIN_ERROR: 'PLUGIN_ERROR',
  PLUGIN_INITIALIZATION_ERROR: 'PLUGIN_INITIALIZATION_ERROR'
}

/**
 * "host:port", "[v6]:port" -> { host, port }; anything else is a unix socket path -> { path }.
 */
function parseBridgeAddress (value) {
  if (typeof value === 'number' && Number.isInteger(value)) {
    value = `127.0.0.1:${value}`
  }
  if (typeof value !== 'string' || value.length === 0) {
    throw new Error(`swarm-clusternode: option "bridge" must be "host:port" or a unix socket path, got ${JSON.stringify(value)}`)
  }
  const match = /^(\[[^\]]+\]|[^:/\\[\]]+):(\d+)$/.exec(value)
  if (match) {
    const port = Number(match[2])
    if (port < 1 || port > 65535) {
      throw new Error(`swarm-clusternode: option "bridge": port must be in 1..65535, got ${JSON.stringify(value)}`)
    }
    const host = match[1].startsWith('[') ? match[1].slice(1, -1) : match[1]
    return { host, port }
  }
  return { path: value }
}

function encodeFrame (object) {
  const body = Buffer.from(JSON.stringify(object), 'utf8')
  const frame = Buffer.allocUnsafe(4 + body.length)
  frame.writeUInt32BE(body.length, 0)
  body.copy(frame, 4)
  return frame
}

/**
 * deepstream's Message may carry `data` as a Buffer (the raw JSON payload); JSON would turn that into
 * {type: 'Buffer', data: [...]}, so it travels as the string it encodes.
 */
function wireMessage (message) {
  if (message && message.data != null && typeof message.data !== 'string' && message.data instanceof Uint8Array) {
    return { ...message, data: Buffer.from(message.data).toString('utf8') }
  }
  return message
}

/** Splits a byte stream into frames. */
class FrameReader {
  constructor (maxFrameSize) {
    this.maxFrameSize = maxFrameSize
    this.chunks = []
    this.buffered = 0
  }

  /** Adds bytes; returns the complete frames' bodies, or throws on an oversized frame. */
  push (chunk) {
    this.chunks.push(chunk)
    this.buffered += chunk.length
    const frames = []
    while (this.buffered >= 4) {
      let buffer = this.chunks.length === 1 ? this.chunks[0] : Buffer.concat(this.chunks, this.buffered)
      this.chunks = [buffer]
      const length = buffer.readUInt32BE(0)
      if (length > this.maxFrameSize) {
        throw new Error(`frame of ${length} bytes exceeds maxFrameSize ${this.maxFrameSize}`)
      }
      if (this.buffered < 4 + length) {
        break
      }
      frames.push(buffer.subarray(4, 4 + length))
      buffer = buffer.subarray(4 + length)
      this.chunks = buffer.length ? [buffer] : []
      this.buffered = buffer.length
    }
    return frames
  }
}

class SwarmClusterNode {
  /**
   * @param {object} options   the `clusterNode.options` of deepstream's config: `bridge` (required) and
   *                           the optional tuning keys of DEFAULTS
   * @param {object} services  deepstream's services (the logger is used)
   * @param {object} config    deepstream's config (`serverName` must equal the sidecar's serverName)
   */
  constructor (options, services, config) {
    options = options || {}
    this.isReady = false
    this.services = services || {}
    this.config = config || {}
    this.serverName = this.config.serverName
    const known = [...Object.keys(DEFAULTS), ...SIDECAR_KEYS, ...SUPERVISED_KEYS, ...COMMON_KEYS]
    for (const key of Object.keys(options)) {
      if (!known.includes(key)) {
        throw new Error(`swarm-clusternode: unknown option "${key}" (known: ${known.sort().join(', ')})`)
      }
    }
    if (options.bridge !== undefined) {
      const supervisedKey = SUPERVISED_KEYS.find((key) => options[key] !== undefined)
      if (supervisedKey) {
        throw new Error(`swarm-clusternode: option "${supervisedKey}" configures the swarm node the plugin ` +
          'runs itself, and "bridge" connects to one run separately: give one or the other')
      }
      this.supervised = null
      this.address = parseBridgeAddress(options.bridge)
      this.addressText = this.address.path || `${this.address.host}:${this.address.port}`
      this.what = 'swarm sidecar'
      this.description = `swarm cluster node (bridge ${this.addressText})`
    } else {
      this.supervised = parseSupervisedOptions(options, this.serverName)
      this.address = null // the socket in the private directory, made by init()
      this.addressText = '(not started)'
      this.what = 'swarm node'
      this.description = `swarm cluster node (supervised python -m swarm node on ${this.supervised.host}:` +
        `${this.supervised.port})`
    }
    this.supervisor = null
    this.options = { ...DEFAULTS }
    for (const key of Object.keys(DEFAULTS)) {
      if (options[key] !== undefined) {
        const value = Number(options[key])
        if (!Number.isFinite(value) || value <= 0) {
          throw new Error(`swarm-clusternode: option "${key}" must be a positive number, got ${JSON.stringify(options[key])}`)
        }
        this.options[key] = value
      }
    }
    if (options.readyTimeout === undefined) {
      const timeout = Number(this.config.dependencyInitializationTimeout)
      this.options.readyTimeout = Math.max(100, Math.floor(0.75 * (Number.isFinite(timeout) && timeout > 0 ? timeout : 2000)))
    }
    this.readyTimer = null
    this.startedUnready = false // whenReady gave up waiting: the node was not ready in time
    this.clientName = options.client || `swarm-clusternode/${PACKAGE_VERSION} deepstream ${this.serverName}`

    this.callbacks = new Map() // String(topic) -> [callback]
    this.topics = new Map() // String(topic) -> topic as given (int or str), for re-subscribing
    this.emitter = new EventEmitter()
    this.emitter.setMaxListeners(0)

    this.queue = [] // encoded frames waiting for the sidecar
    this.queueHead = 0
    this.queuedBytes = 0
    this.dropped = 0 // dropped since the last report
    this.droppedTotal = 0 // ... and since the start
    this.dropTimer = null
    this.lostTotal = 0 // messages the sidecar dropped for this server (its `dropped` reports)

    this.socket = null
    this.reader = null
    this.welcomed = false // this connection got its welcome
    this.sidecarReady = false // ... and the sidecar is ready: frames are written straight through
    this.started = false
    this.closing = false
    this.closed = false
    this.attempt = 0
    this.everConnected = false
    this.lastUnreachableLog = 0
    this.reconnectTimer = null
    this.handshakeTimer = null
    this.readyPromise = new Promise((resolve) => this.emitter.once('ready', resolve))
  }

  // ------------------------------------------------------------------ deepstream's API

  init () {
    this._start()
  }

  async whenReady () {
    this._start()
    if (!this.isReady && this.readyTimer === null && !this.closing) {
      this.readyTimer = setTimeout(() => this._onReadyTimeout(), this.options.readyTimeout)
    }
    return this.readyPromise
  }

  _onReadyTimeout () {
    if (this.isReady || this.closing) {
      return
    }
    this.startedUnready = true
    this.isReady = true
    this._log('warn', EVENT.PLUGIN_ERROR, `${this.what} ${this.addressText} is not ready after ` +
      `${this.options.readyTimeout} ms (readyTimeout): deepstream starts without its cluster for now; ` +
      `messages wait for the ${this.what} (at most ${this.options.maxQueuedMessages} messages / ` +
      `${this.options.maxQueuedBytes} bytes, the oldest dropped past that and counted in this log)`)
    this.emitter.emit('ready')
  }

  send (message, metaData) {
    this._enqueue({ op: 'send', message: wireMessage(message) })
  }

  sendDirect (serverName, message, metaData) {
    this._enqueue({ op: 'send_direct', server: serverName, message: wireMessage(message) })
  }

  subscribe (topic, callback) {
    const key = String(topic)
    let callbacks = this.callbacks.get(key)
    if (!callbacks) {
      callbacks = []
      this.callbacks.set(key, callbacks)
      this.topics.set(key, topic)
      if (this.welcomed) {
        this._write(encodeFrame({ op: 'subscribe', topic }))
      }
    }
    callbacks.push(callback)
  }

  async close () {
    if (this.closing) {
      return this.closedPromise
    }
    this.closing = true
    this.closedPromise = this._close()
    return this.closedPromise
  }

  // ------------------------------------------------------------------ connection

  _start () {
    if (this.started || this.closing) {
      return
    }
    this.started = true
    if (!this.supervised) {
      this._connect()
      return
    }
    const supervisor = new NodeSupervisor(this.supervised, (level, text) => {
      this._log(level, level === 'info' || level === 'debug' ? EVENT.INFO : EVENT.PLUGIN_ERROR, text)
    })
    this.supervisor = supervisor
    supervisor.on('bridge', () => this._connectNow())
    supervisor.on('exit', () => {
      // the connection to the dead node is of no use; the next one waits for the new node's bridge
      clearTimeout(this.reconnectTimer)
      this.reconnectTimer = null
      if (this.socket) {
        this._drop(this.socket, 'the swarm node died')
      }
    })
    supervisor.start()
    this.address = { path: supervisor.socketPath }
    this.addressText = supervisor.socketPath
  }

  /** Supervised mode: the node says its bridge listens; connect now rather than at the next backoff. */
  _connectNow () {
    if (this.closing) {
      return
    }
    clearTimeout(this.reconnectTimer)
    this.reconnectTimer = null
    this.attempt = 0
    if (this.socket) {
      this._drop(this.socket, 'a new swarm node started') // its close reconnects, with bridgeUp set
    } else {
      this._connect()
    }
  }

  _connect () {
    this.reconnectTimer = null
    if (this.closing) {
      return
    }
    const socket = this.address.path
      ? net.createConnection({ path: this.address.path })
      : net.createConnection({ host: this.address.host, port: this.address.port })
    socket.setNoDelay(true)
    this.socket = socket
    this.reader = new FrameReader(this.options.maxFrameSize)
    this.welcomed = false
    this.sidecarReady = false

    socket.on('connect', () => {
      socket.write(encodeFrame({ op: 'hello', version: PROTOCOL_VERSION, client: this.clientName }))
    })
    this.handshakeTimer = setTimeout(() => {
      this._drop(socket, `no welcome within ${this.options.handshakeTimeout} ms`)
    }, this.options.handshakeTimeout)
    socket.on('data', (chunk) => {
      let frames
      try {
        frames = this.reader.push(chunk)
      } catch (error) {
        this._drop(socket, error.message)
        return
      }
      for (const frame of frames) {
        if (this.socket !== socket) {
          return
        }
        let object
        try {
          object = JSON.parse(frame.toString('utf8'))
        } catch (error) {
          this._drop(socket, `undecodable frame from the sidecar: ${error.message}`)
          return
        }
        this._onFrame(socket, object)
      }
    })
    socket.on('drain', () => {
      if (this.socket === socket) {
        this._flush()
      }
    })
    socket.on('error', (error) => {
      socket.lastError = error
    })
    socket.on('close', () => {
      if (this.socket === socket) {
        this._onLost(socket.dropReason || (socket.lastError && socket.lastError.message) || `connection closed by the ${this.what}`)
      }
    })
  }

  _onFrame (socket, object) {
    if (object === null || typeof object !== 'object') {
      this._drop(socket, 'a frame from the sidecar is not a JSON object')
      return
    }
    switch (object.op) {
      case 'welcome':
        this._onWelcome(socket, object)
        return
      case 'ready':
        if (this.welcomed && !this.sidecarReady) {
          this._onSidecarReady()
        }
        return
      case 'message':
        this._onMessage(object)
        return
      case 'error':
        this._log('warn', EVENT.PLUGIN_ERROR, `${this.what} ${this.addressText} reports ${object.code}: ${object.text}`)
        return
      case 'dropped':
        this._onDropped(object)
        return
      case 'peer':
        this._log(object.event === 'left' ? 'info' : 'warn', object.event === 'left' ? EVENT.INFO : EVENT.PLUGIN_ERROR,
          `${this.what} ${this.addressText}: ${object.text || `peer ${object.server} ${object.event}`}`)
        return
      default:
        this._log('warn', EVENT.PLUGIN_ERROR, `${this.what} ${this.addressText} sent an unknown op ${JSON.stringify(object.op)}`)
    }
  }

  _onWelcome (socket, welcome) {
    clearTimeout(this.handshakeTimer)
    this.handshakeTimer = null
    if (welcome.version !== PROTOCOL_VERSION) {
      this._drop(socket, `the sidecar speaks bridge version ${welcome.version}, this plugin ${PROTOCOL_VERSION}`, true)
      return
    }
    if (this.serverName !== undefined && welcome.serverName !== this.serverName) {
      this._drop(socket, `the sidecar's serverName is ${JSON.stringify(welcome.serverName)} but deepstream's is ` +
        `${JSON.stringify(this.serverName)}; they must be equal (sendDirect addresses servers by name)`, true)
      return
    }
    this.welcomed = true
    this.attempt = 0
    const again = this.everConnected
    this.everConnected = true
    this._log('info', EVENT.INFO, `${this.what} ${this.addressText} ${again ? 'reconnected' : 'connected'}` +
      ` (serverName ${welcome.serverName}, ${welcome.ready ? 'ready' : 'not ready yet'})`)
    for (const topic of this.topics.values()) {
      socket.write(encodeFrame({ op: 'subscribe', topic }))
    }
    if (welcome.ready) {
      this._onSidecarReady()
    }
  }

  _onSidecarReady () {
    this.sidecarReady = true
    clearTimeout(this.readyTimer)
    this._reportDropped()
    if (this.startedUnready) {
      this.startedUnready = false
      this._log('info', EVENT.INFO, `${this.what} ${this.addressText} is ready: this server joins its cluster ` +
        `now, and the ${this._queueLength()} messages that waited are sent`)
    }
    this._flush()
    if (!this.isReady) {
      this.isReady = true
      this.emitter.emit('ready')
    }
  }

  /** The sidecar dropped messages for this server (it did not read fast enough): log the exact counts. */
  _onDropped (object) {
    const total = Number.isSafeInteger(object.total) ? object.total : 0
    this.lostTotal += total
    const origins = object.origins && typeof object.origins === 'object'
      ? Object.entries(object.origins).map(([origin, count]) => `${count} from ${origin}`).join(', ')
      : '?'
    this._log('warn', EVENT.PLUGIN_ERROR, `lost ${total} messages from the cluster (${origins}; ${this.lostTotal} ` +
      `since start): this server did not read them fast enough and the ${this.what} dropped them`)
  }

  _onMessage (object) {
    const message = object.message
    if (message === null || typeof message !== 'object') {
      this._log('warn', EVENT.PLUGIN_ERROR, `${this.what} delivered a message that is not an object; ignored`)
      return
    }
    if (object.origin === this.serverName) {
      this._log('warn', EVENT.PLUGIN_ERROR, `${this.what} echoed this server's own message (topic ${message.topic}); ignored`)
      return
    }
    const callbacks = this.callbacks.get(String(message.topic))
    if (!callbacks) {
      return
    }
    if (message.topic === TOPIC_CLUSTER && message.action === CLUSTER_REMOVE && message.serverName === undefined) {
      // deepstream 7.0.2's cluster registry announces its leave as {action: REMOVE, name} but reads a
      // REMOVE's `serverName`: as shipped, a server that left gracefully stayed in the others' registry
      // (a lock leader, a listener) until nodeInactiveTimeout. A REMOVE is about its sender, whom swarm names.
      message.serverName = object.origin
    }
    for (let i = 0; i < callbacks.length; i++) {
      // every callback gets its own copy
      const copy = i === 0 ? message : JSON.parse(JSON.stringify(message))
      try {
        callbacks[i](copy, object.origin)
      } catch (error) {
        this._log('error', EVENT.PLUGIN_ERROR, `a subscriber of topic ${message.topic} threw: ${error && error.stack}`)
      }
    }
  }

  /** Ends this connection; `close` reconnects unless the plugin is closing. */
  _drop (socket, reason, configError) {
    if (socket.destroyed) {
      return
    }
    socket.dropReason = reason
    socket.configError = Boolean(configError)
    socket.destroy()
  }

  _onLost (reason) {
    const socket = this.socket
    clearTimeout(this.handshakeTimer)
    this.handshakeTimer = null
    const wasWelcomed = this.welcomed
    this.socket = null
    this.reader = null
    this.welcomed = false
    this.sidecarReady = false
    if (this.closing) {
      return
    }
    if (this.supervisor && !this.supervisor.bridgeUp) {
      // the node is down or not listening yet: its `bridge` line starts the next connection
      this._log('warn', EVENT.PLUGIN_ERROR, `lost swarm node ${this.addressText}: ${reason}; connecting again ` +
        `once it is back (${this._queueLength()} messages waiting)`)
      return
    }
    const delay = this._backoff()
    const message = `${this.what} ${this.addressText}: ${reason}; reconnecting in ${delay} ms` +
      ` (${this._queueLength()} messages waiting)`
    if (socket && socket.configError) {
      this._log('error', EVENT.PLUGIN_INITIALIZATION_ERROR, message)
    } else if (wasWelcomed) {
      this._log('warn', EVENT.PLUGIN_ERROR, `lost ${message}`)
    } else if (socket && socket.dropReason) {
      // connected, but the sidecar broke the protocol or never said welcome
      this._log('warn', EVENT.PLUGIN_ERROR, message)
    } else {
      // unreachable: once on the first failure, then at most every 30 s
      const now = Date.now()
      if (this.attempt === 1 || now - this.lastUnreachableLog >= 30000) {
        this.lastUnreachableLog = now
        this._log('warn', EVENT.PLUGIN_ERROR, `cannot reach ${message} (attempt ${this.attempt})`)
      }
    }
    this.reconnectTimer = setTimeout(() => this._connect(), delay)
  }

  _backoff () {
    this.attempt += 1
    const ceiling = Math.min(this.options.maxReconnectInterval,
      this.options.reconnectInterval * Math.pow(2, this.attempt - 1))
    return Math.max(1, Math.round(ceiling * (0.5 + Math.random() * 0.5)))
  }

  async _close () {
    clearTimeout(this.readyTimer)
    clearTimeout(this.reconnectTimer)
    this.reconnectTimer = null
    // deepstream closes its services together: the cluster registry's leave message is sent right after
    // this call, in the same tick; let it reach the socket first
    await new Promise((resolve) => setImmediate(resolve))
    this.closed = true
    const socket = this.socket
    if (socket && this.sidecarReady) {
      this._flush(true)
    }
    clearTimeout(this.dropTimer)
    this.dropTimer = null
    this._reportDropped()
    const lost = this._queueLength()
    if (lost) {
      this._log('warn', EVENT.PLUGIN_ERROR, `closing with ${lost} messages the ${this.what} never took (not sent)`)
    }
    this.queue = []
    this.queueHead = 0
    this.queuedBytes = 0
    if (socket && !socket.destroyed) {
      await new Promise((resolve) => {
        const timer = setTimeout(() => { socket.destroy(); resolve() }, this.options.closeTimeout)
        socket.once('close', () => { clearTimeout(timer); resolve() })
        socket.end()
      })
    }
    if (this.supervisor) {
      // after the last frames: the node leaves its cluster with deepstream's leave message sent
      await this.supervisor.stop()
    }
  }

  // ------------------------------------------------------------------ the bounded queue

  _enqueue (object) {
    if (this.closed) {
      return
    }
    // what the sidecar would take for garbage (and drop the connection for) is refused here
    const topic = object.message && object.message.topic
    if (!(Number.isSafeInteger(topic) || (typeof topic === 'string' && topic.length > 0))) {
      this._log('error', EVENT.PLUGIN_ERROR, `a message without an integer or string topic is not sent: ` +
        `topic ${JSON.stringify(topic)}`)
      return
    }
    if (object.op === 'send_direct' && (typeof object.server !== 'string' || object.server.length === 0)) {
      this._log('error', EVENT.PLUGIN_ERROR, `sendDirect needs a serverName, got ${JSON.stringify(object.server)}`)
      return
    }
    let frame
    try {
      frame = encodeFrame(object)
    } catch (error) {
      this._log('error', EVENT.PLUGIN_ERROR, `a message on topic ${object.message && object.message.topic} ` +
        `cannot be written as JSON, not sent: ${error.message}`)
      return
    }
    if (frame.length - 4 > this.options.maxFrameSize) {
      this._log('error', EVENT.PLUGIN_ERROR, `a message on topic ${object.message && object.message.topic} is ` +
        `${frame.length - 4} bytes of JSON, over maxFrameSize ${this.options.maxFrameSize}: not sent`)
      return
    }
    if (this.sidecarReady && this._queueLength() === 0 && this.socket.writableLength < this.options.socketHighWater) {
      this.socket.write(frame)
      return
    }
    this.queue.push(frame)
    this.queuedBytes += frame.length
    while (this._queueLength() > this.options.maxQueuedMessages || this.queuedBytes > this.options.maxQueuedBytes) {
      const oldest = this.queue[this.queueHead]
      this.queue[this.queueHead] = undefined
      this.queueHead += 1
      this.queuedBytes -= oldest.length
      if (this.dropped === 0 && this.dropTimer === null) {
        this._log('warn', EVENT.PLUGIN_ERROR, `${this.what} ${this.addressText} is not taking messages and ` +
          `${this.options.maxQueuedMessages} messages / ${this.options.maxQueuedBytes} bytes are waiting: ` +
          'dropping the oldest')
        this.dropTimer = setTimeout(() => this._onDropTimer(), this.options.dropReportInterval)
      }
      this.dropped += 1
      this.droppedTotal += 1
    }
    this._compact()
    if (this.sidecarReady) {
      this._flush()
    }
  }

  _write (frame) {
    if (this.socket && !this.socket.destroyed) {
      this.socket.write(frame)
    }
  }

  /** Writes waiting frames while the socket takes them (all of them when `force`). */
  _flush (force) {
    const socket = this.socket
    while (this._queueLength() > 0 && (force || socket.writableLength < this.options.socketHighWater)) {
      const frame = this.queue[this.queueHead]
      this.queue[this.queueHead] = undefined
      this.queueHead += 1
      this.queuedBytes -= frame.length
      socket.write(frame)
    }
    this._compact()
  }

  _queueLength () {
    return this.queue.length - this.queueHead
  }

  _compact () {
    if (this.queueHead > 1024 && this.queueHead * 2 > this.queue.length) {
      this.queue = this.queue.slice(this.queueHead)
      this.queueHead = 0
    } else if (this.queueHead === this.queue.length) {
      this.queue = []
      this.queueHead = 0
    }
  }

  _onDropTimer () {
    this.dropTimer = null
    if (this.dropped) {
      this._reportDropped()
      // drops go on: the next report in one interval, with the count since this one
      this.dropTimer = setTimeout(() => this._onDropTimer(), this.options.dropReportInterval)
    }
  }

  _reportDropped () {
    if (this.dropped) {
      this._log('warn', EVENT.PLUGIN_ERROR, `dropped ${this.dropped} messages while the ${this.what} was not ` +
        `taking them (not sent; ${this.droppedTotal} since start)`)
      this.dropped = 0
    }
  }

  _log (level, event, text) {
    const logger = this.services.logger
    if (logger && typeof logger[level] === 'function') {
      logger[level](event, text)
    } else {
      console.error(`swarm-clusternode ${level}: ${text}`)
    }
  }
}

module.exports = SwarmClusterNode
module.exports.SwarmClusterNode = SwarmClusterNode
module.exports.parseBridgeAddress = parseBridgeAddress
module.exports.FrameReader = FrameReader
module.exports.DEFAULTS = DEFAULTS
module.exports.SUPERVISED_DEFAULTS = SUPERVISED_DEFAULTS
module.exports.parseSupervisedOptions = parseSupervisedOptions
