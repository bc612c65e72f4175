#!/usr/bin/env node
// A new person's path through Vow's pages in headless Chromium, on a phone-sized screen, with a
// virtual passkey: the home page, sign-up with an invite code, passkey registration, a first
// post signed in the tab, email confirmation and a forgotten password through the mail a real
// SMTP server received, sessions and app passwords, and deletion confirmed with the passkey.
// Saves a screenshot of each page to --shots DIR.
// Usage: node pages-flow.js <publicUrl> --plc URL --invite CODE --mail-dir DIR --shots DIR [--chromium PATH]
const fs = require('fs')
const path = require('path')
const { AtpAgent } = require('@atproto/api')
const { option, check, steps, launchChromium, addVirtualPasskey } = require('./lib')

const args = process.argv.slice(2)
const service = args[0]
const plc = option(args, '--plc')
const invite = option(args, '--invite')
const mailDir = option(args, '--mail-dir')
const shots = option(args, '--shots')
if (!service || !plc || !invite || !mailDir || !shots) {
  console.error('usage: pages-flow.js <publicUrl> --plc URL --invite CODE --mail-dir DIR --shots DIR')
  process.exit(2)
}
fs.mkdirSync(shots, { recursive: true })
const { step, run } = steps()

/** The code in the newest mail to `to` once there are more than `after` of them. */
async function mailedCode(to, after) {
  for (let i = 0; i < 600; i++) {
    const mails = fs
      .readdirSync(mailDir)
      .filter((f) => f.endsWith('.eml'))
      .sort()
      .map((f) => fs.readFileSync(path.join(mailDir, f), 'utf8'))
      .filter((t) => t.includes(`X-Envelope-To: ${to}`))
    if (mails.length > after) {
      const m = mails[mails.length - 1].match(/\b([A-Z2-7]{5}-[A-Z2-7]{5})\b/)
      check(m, 'the mail holds a code')
      return m[1]
    }
    await new Promise((r) => setTimeout(r, 50))
  }
  throw new Error(`no mail to ${to}`)
}

async function main() {
  const { context, page } = await launchChromium(option(args, '--chromium'))
  const shot = (name) => page.screenshot({ path: path.join(shots, `${name}.png`), fullPage: true })
  const text = (sel) => page.textContent(sel)
  const email = 'newcomer@example.com'
  let password = 'first-password-123'
  let did
  try {
    await page.setViewportSize({ width: 390, height: 844 })
    await addVirtualPasskey(context, page)

    await step('the home page says what this server is', async () => {
      await page.goto(`${service}/`)
      check((await text('main')).includes('never holds your signing key'), 'it explains BYOK')
      await shot('01-home')
    })

    await step('sign-up: a wrong invite keeps what was typed and says why; the right one signs in', async () => {
      await page.click('text=Create an account')
      await page.waitForSelector('form[action="/signup"]')
      await page.fill('input[name=invite]', 'not-a-code')
      await page.fill('input[name=name]', 'newcomer')
      await page.fill('input[name=email]', email)
      await page.fill('input[name=password]', password)
      await shot('02-signup')
      await page.click('button[type=submit]')
      await page.waitForSelector('.error')
      check((await text('.error')).includes('invite code'), `the error names the invite: ${await text('.error')}`)
      check((await page.inputValue('input[name=name]')) === 'newcomer', 'the handle is kept')
      await page.fill('input[name=invite]', invite)
      await page.fill('input[name=password]', password)
      await page.click('button[type=submit]')
      await page.waitForURL(/\/account\?welcome=1/)
      check((await text('main')).includes('One step left'), 'the welcome says what is next')
      did = await page.getAttribute('#vow', 'data-did')
      await shot('03-account-new')
    })

    await step('register a passkey: the page shows the key at once, and the first post is signed in the tab', async () => {
      await page.click('#register')
      await page.waitForFunction(() => document.getElementById('status').textContent.startsWith('Passkey registered'), null, { timeout: 60000 })
      check((await text('#key-status')).includes('Your signing key is did:key:'), `key status: ${await text('#key-status')}`)
      check(!(await text('#key-status')).includes('No signing key yet'), 'the old text is gone')
      await page.waitForFunction(() => document.getElementById('signer-state').textContent.startsWith('Connected'), null, { timeout: 60000 })
      check(await page.isDisabled('#unlock'), 'unlock is off while unlocked')
      check(!(await page.isDisabled('#disconnect')), 'lock is on while unlocked')
      await page.fill('#post-text', 'Hello from my passkey')
      await page.click('#post-send')
      await page.waitForFunction(() => document.getElementById('post-status').textContent.startsWith('Posted: at://'), null, { timeout: 60000 })
      const agent = new AtpAgent({ service })
      const posts = (await agent.com.atproto.repo.listRecords({ repo: did, collection: 'app.bsky.feed.post' })).data.records
      check(posts.length === 1 && posts[0].value.text === 'Hello from my passkey', 'the post is in the repo')
      const log = await page.$$eval('#log li', (lis) => lis.map((li) => li.textContent))
      check(log.some((l) => l.includes('"Hello from my passkey"')), `the log shows the text signed: ${log}`)
      await shot('04-account')
    })

    await step('confirm the email address with the mailed code', async () => {
      await page.click('#email-send')
      await page.waitForFunction(() => document.getElementById('email-status').textContent.includes('on its way'))
      await page.fill('#email-code', await mailedCode(email, 0))
      await page.click('#email-confirm')
      await page.waitForFunction(() => document.getElementById('email-status').textContent.includes('confirmed'))
    })

    await step('sessions and app passwords are listed and revoked on the page', async () => {
      const agent = new AtpAgent({ service })
      await agent.login({ identifier: 'newcomer.localhost', password })
      await agent.com.atproto.server.createAppPassword({ name: 'phone app' })
      await page.reload()
      await page.waitForSelector('body[data-ready="1"]')
      check((await text('#sessions')).includes('with your password'), 'the app session is listed')
      check((await text('#app-passwords')).includes('phone app'), 'the app password is listed')
      await shot('05-account-sessions')
      await page.click('.revoke-app-password')
      await page.click('.revoke-session')
      await page.waitForFunction(() => !document.querySelector('.revoke-session'))
      const gone = await agent.com.atproto.server.getSession().then(() => 'alive', (e) => e.error)
      check(gone === 'ExpiredToken' || gone === 'InvalidToken', `the ended session is refused (${gone})`)
    })

    await step('forgot password: a code by mail, a new password, every session ended', async () => {
      await page.goto(`${service}/account/signout`)
      await page.click('text=Forgot your password?')
      await page.fill('input[name=email]', email)
      await shot('06-forgot')
      await page.click('button[type=submit]')
      await page.waitForSelector('form[action="/account/reset"]')
      await page.fill('input[name=token]', await mailedCode(email, 1))
      password = 'second-password-456'
      await page.fill('input[name=password]', password)
      await shot('07-reset')
      await page.click('button[type=submit]')
      await page.waitForSelector('text=Password changed')
      await page.click('text=Sign in')
      await page.fill('input[name=identifier]', 'newcomer.localhost')
      await page.fill('input[name=password]', password)
      await shot('08-signin')
      await page.click('button[type=submit]')
      await page.waitForSelector('body[data-ready="1"]')
    })

    await step('a form sent from another address gets a page that says where to go', async () => {
      const res = await fetch(`${service}/account/signin`, {
        method: 'POST',
        headers: { origin: service.replace('localhost', '127.0.0.1'), 'content-type': 'application/x-www-form-urlencoded' },
        body: 'identifier=x&password=y',
      })
      const body = await res.text()
      check(res.status === 403 && body.includes('Open this page at its own address') && body.includes(`${service}/account/signin`), 'a page, with the link')
      const missing = await fetch(`${service}/signup`)
      check(missing.status === 200, '/signup exists')
    })

    await step('delete the account and tombstone the DID: the mailed code, the password, the passkey, the key', async () => {
      await page.click('#unlock')
      await page.waitForFunction(() => document.getElementById('signer-state').textContent.startsWith('Connected'), null, { timeout: 60000 })
      await page.click('#delete-send')
      await page.waitForFunction(() => document.getElementById('delete-status').textContent.includes('on its way'))
      await page.fill('#delete-code', await mailedCode(email, 2))
      await page.fill('#delete-password', password)
      await page.check('#delete-tombstone')
      const dialogs = []
      const accept = (d) => {
        dialogs.push(d.message())
        d.accept()
      }
      page.on('dialog', accept)
      await shot('09-delete')
      await page.click('#delete-confirm')
      await page.waitForSelector('#deleted', { timeout: 60000 })
      page.off('dialog', accept)
      check(dialogs.some((d) => d.includes('tombstoned')), `the signer showed the tombstone: ${JSON.stringify(dialogs)}`)
      const agent = new AtpAgent({ service })
      const after = await agent.com.atproto.sync.getLatestCommit({ did }).then(() => 'still there', (e) => e.error)
      check(after === 'RepoNotFound', `the repo is gone (${after})`)
      const last = await (await fetch(`${plc}/${did}/log/last`)).json()
      check(last.type === 'plc_tombstone', `the DID's last operation is a tombstone (${last.type})`)
      check((await fetch(`${plc}/${did}`)).status !== 200, 'the DID no longer resolves')
    })
  } finally {
    await context.close()
  }
  return { did }
}

run(main)
