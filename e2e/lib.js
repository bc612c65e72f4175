// Shared by the e2e scripts: command-line options, step-by-step logging, and headless
// Chromium with a virtual passkey.

/** The value after `--name` in `args`, or `dflt`. */
exports.option = (args, name, dflt) => {
  const i = args.indexOf(name)
  return i >= 0 ? args[i + 1] : dflt
}

/** Throws unless `cond` holds. */
exports.check = (cond, what) => {
  if (!cond) throw new Error(`check failed: ${what}`)
}

/**
 * Named, timed steps. `step(name, fn)` runs fn, logs "ok"/"FAIL" with the time, and rethrows
 * failures; `run(main)` runs the script, printing the log and exiting 1 on failure.
 */
exports.steps = () => {
  const log = []
  async function step(name, fn) {
    const started = performance.now()
    try {
      const out = await fn()
      log.push(`ok   ${name} (${(performance.now() - started).toFixed(0)} ms)`)
      return out
    } catch (err) {
      log.push(`FAIL ${name}: ${err && err.error ? err.error + ': ' : ''}${err && err.message}`)
      throw err
    }
  }
  function run(main) {
    main()
      .then((summary) => {
        console.log(log.join('\n'))
        console.log(JSON.stringify({ ok: true, ...summary }))
      })
      .catch((err) => {
        console.log(log.join('\n'))
        console.error(err)
        process.exit(1)
      })
  }
  return { log, step, run }
}

/** Debian's Chromium, headless, in a fresh profile: `{ context, page }`. */
exports.launchChromium = async (executablePath) => {
  const fs = require('fs')
  const os = require('os')
  const path = require('path')
  const { chromium } = require('playwright-core')
  const userDataDir = fs.mkdtempSync(path.join(os.tmpdir(), 'vow-chromium-'))
  const context = await chromium.launchPersistentContext(userDataDir, {
    executablePath: executablePath || process.env.CHROMIUM || '/usr/bin/chromium',
    headless: true,
    args: ['--no-sandbox', '--disable-gpu', '--no-first-run', '--disable-background-networking', '--disable-sync'],
  })
  return { context, page: context.pages()[0] || (await context.newPage()) }
}

/** A CDP virtual authenticator with PRF for `page`, answering without a person. */
exports.addVirtualPasskey = async (context, page) => {
  const cdp = await context.newCDPSession(page)
  await cdp.send('WebAuthn.enable', { enableUI: false })
  await cdp.send('WebAuthn.addVirtualAuthenticator', {
    options: {
      protocol: 'ctap2', transport: 'internal', hasResidentKey: true, hasUserVerification: true,
      isUserVerified: true, hasPrf: true, automaticPresenceSimulation: true,
    },
  })
}
