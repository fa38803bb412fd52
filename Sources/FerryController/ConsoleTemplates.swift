import Mustache

/// The web console's Mustache templates, kept as strings so that no resource bundle is needed.
/// `{{ }}` escapes HTML; the one unescaped value, the layout's `{{{content}}}`, is a page these
/// templates rendered. No JavaScript: forms POST and the controller answers 303 to a page.
enum ConsoleTemplates {
    /// Every template by name, parsed once.
    static let library: MustacheLibrary = {
        var library = MustacheLibrary()
        for (name, text) in all {
            // The templates are constants of this file: a parse error is a programming error.
            try! library.register(text, named: name)
        }
        return library
    }()

    static let all: [String: String] = [
        "layout": layout, "login": login, "projects": projects, "project": project, "guest": guest,
        "admin": admin, "error": error, "csrf": csrf, "leases": leases, "group": group,
    ]

    /// A hidden field with the session's CSRF token: the middleware checks it on every POST.
    static let csrf = """
        <input type="hidden" name="csrf_token" value="{{csrfToken}}">
        """

    static let layout = """
        <!DOCTYPE html>
        <html lang="en">
        <head>
        <meta charset="utf-8">
        <meta name="viewport" content="width=device-width, initial-scale=1">
        {{#refreshSeconds}}<meta http-equiv="refresh" content="{{refreshSeconds}}">{{/refreshSeconds}}
        <title>{{title}} · Ferry</title>
        <style>
        body { font-family: system-ui, sans-serif; margin: 0 auto; max-width: 60em; padding: 0 1em; color: #222; }
        header { display: flex; gap: 1em; align-items: center; border-bottom: 1px solid #ccc; padding: .5em 0; }
        header .who { margin-left: auto; }
        table { border-collapse: collapse; width: 100%; margin: .5em 0 1em; }
        th, td { text-align: left; padding: .25em .5em; border-bottom: 1px solid #eee; }
        .error { background: #fee; border: 1px solid #c33; padding: .5em; }
        .notice { background: #efe; border: 1px solid #3a3; padding: .5em; }
        .state { font-weight: bold; }
        pre.console { background: #111; color: #ddd; padding: .5em; overflow-x: auto; max-height: 30em; }
        form.inline { display: inline; }
        fieldset { margin: .5em 0; }
        </style>
        </head>
        <body>
        <header>
        <a href="/console">Ferry console</a>
        {{#user}}
        {{#siteAdmin}}<a href="/console/admin">Admin</a>{{/siteAdmin}}
        <span class="who">{{name}}</span>
        <form class="inline" method="post" action="/console/logout">{{>csrf}}<button type="submit">Log out</button></form>
        {{/user}}
        </header>
        <main>
        {{{content}}}
        </main>
        </body>
        </html>
        """

    static let login = """
        <h1>Log in</h1>
        {{#error}}<p class="error" role="alert">{{error}}</p>{{/error}}
        <form method="post" action="/console/login">
        <input type="hidden" name="csrf_token" value="{{csrfToken}}">
        <p><label>User <input name="name" value="{{name}}" autocomplete="username" required></label></p>
        <p><label>Password <input type="password" name="password" autocomplete="current-password" required></label></p>
        <p><button type="submit">Log in</button></p>
        </form>
        """

    static let projects = """
        <h1>Your projects</h1>
        {{#hasProjects}}
        <table>
        <tr><th>Project</th><th>Your role</th><th>Guests</th></tr>
        {{#projects}}
        <tr><td><a href="/console/projects/{{name}}">{{name}}</a></td><td>{{role}}</td><td>{{guests}}</td></tr>
        {{/projects}}
        </table>
        {{/hasProjects}}
        {{^projects}}<p>You are in no project yet: ask an administrator to add you to one.</p>{{/projects}}
        """

    static let project = """
        <h1>Project {{project}}</h1>
        <p><a href="/console/projects/{{project}}/leases">Leases (reserved capacity)</a></p>
        {{#error}}<p class="error" role="alert">{{error}}</p>{{/error}}
        <h2>Guests</h2>
        {{#hasGuests}}
        <table>
        <tr><th>Name</th><th>State</th><th>Flavor</th><th>Image</th><th>Host</th></tr>
        {{#guests}}
        <tr><td><a href="/console/guests/{{id}}">{{name}}</a></td><td class="state">{{state}}</td>
        <td>{{flavor}}</td><td>{{image}}</td><td>{{host}}</td></tr>
        {{/guests}}
        </table>
        {{/hasGuests}}
        {{^guests}}<p>No guests yet.</p>{{/guests}}
        {{#hasGroups}}
        <h2>Auto-scaling groups</h2>
        <table>
        <tr><th>Group</th><th>Desired</th><th>Bounds</th><th>State</th></tr>
        {{#groups}}
        <tr><td><a href="/console/groups/{{id}}">{{name}}</a></td><td>{{desired}}</td><td>{{bounds}}</td><td>{{state}}</td></tr>
        {{/groups}}
        </table>
        {{/hasGroups}}
        <h2>New guest</h2>
        <form method="post" action="/console/projects/{{project}}/guests">
        {{>csrf}}
        <input type="hidden" name="client_token" value="{{clientToken}}">
        <fieldset><legend>Image</legend>
        {{#images}}
        <label><input type="radio" name="image" value="{{name}}"{{#checked}} checked{{/checked}} required> {{name}} ({{kind}})</label><br>
        {{/images}}
        {{^images}}<p>No images in the catalogue.</p>{{/images}}
        </fieldset>
        <fieldset><legend>Flavor</legend>
        <table>
        <tr><th></th><th>Flavor</th><th>vCPUs</th><th>Memory</th><th>Disk</th><th>Price per hour</th></tr>
        {{#flavors}}
        <tr><td><input type="radio" id="flavor-{{name}}" name="flavor" value="{{name}}"{{#checked}} checked{{/checked}} required></td>
        <td><label for="flavor-{{name}}">{{name}}</label></td><td>{{vcpus}}</td><td>{{memory}}</td><td>{{disk}}</td>
        <td>{{pricePerHour}}</td></tr>
        {{/flavors}}
        </table>
        </fieldset>
        <p><label>Name <input name="name" value="{{name}}" pattern="[a-z0-9][a-z0-9._-]*" required></label></p>
        <p><button type="submit">Create guest</button></p>
        </form>
        """

    static let guest = """
        <h1>Guest {{name}}</h1>
        {{#error}}<p class="error" role="alert">{{error}}</p>{{/error}}
        {{#notice}}<p class="notice" role="status">{{notice}}</p>{{/notice}}
        <p><a href="/console/projects/{{project}}">← project {{project}}</a></p>
        <table>
        <tr><th>State</th><td class="state" id="state">{{state}}</td></tr>
        {{#errorReason}}<tr><th>Error</th><td>{{errorReason}}</td></tr>{{/errorReason}}
        <tr><th>ID</th><td>{{id}}</td></tr>
        <tr><th>Host</th><td>{{host}} {{#hostAddress}}({{hostAddress}}){{/hostAddress}}{{#movingTo}}, moving to {{movingTo}}{{/movingTo}}</td></tr>
        <tr><th>Flavor</th><td>{{flavor}}: {{vcpus}} vCPU, {{memory}} memory, {{disk}} disk</td></tr>
        <tr><th>Image</th><td>{{image}}</td></tr>
        <tr><th>Created</th><td>{{createdAt}}</td></tr>
        </table>
        <h2>Bill so far</h2>
        <p id="bill">Running <span id="bill-seconds">{{billedSeconds}}</span> s at {{pricePerHour}} per hour:
        <strong id="bill-amount">{{amount}}</strong></p>
        <h2>Actions</h2>
        <p>
        {{#canStop}}<form class="inline" method="post" action="/console/guests/{{id}}/stop">{{>csrf}}<button type="submit">Stop</button></form>{{/canStop}}
        {{#canStart}}<form class="inline" method="post" action="/console/guests/{{id}}/start">{{>csrf}}<button type="submit">Start</button></form>{{/canStart}}
        {{#canSuspend}}<form class="inline" method="post" action="/console/guests/{{id}}/suspend">{{>csrf}}<button type="submit">Suspend</button></form>{{/canSuspend}}
        {{#canResume}}<form class="inline" method="post" action="/console/guests/{{id}}/resume">{{>csrf}}<button type="submit">Resume</button></form>{{/canResume}}
        {{#canDelete}}<form class="inline" method="post" action="/console/guests/{{id}}/delete">{{>csrf}}<button type="submit">Delete</button></form>{{/canDelete}}
        {{#canMigrate}}<form class="inline" method="post" action="/console/guests/{{id}}/migrate">{{>csrf}}
        <label>to <select name="host"><option value="">any host</option>{{#destinations}}<option value="{{.}}">{{.}}</option>{{/destinations}}</select></label>
        <button type="submit">Migrate</button></form>{{/canMigrate}}
        {{^hasActions}}Nothing to do while the guest is {{state}}.{{/hasActions}}
        </p>
        <h2>Usage, last 10 minutes</h2>
        <figure id="usage">{{{usageChart}}}
        <figcaption>CPU use of its vCPUs (solid) and the load the guest reports (dashed), from its host's heartbeats.</figcaption></figure>
        <h2>Console</h2>
        {{#consoleNote}}<p>{{consoleNote}}</p>{{/consoleNote}}
        {{#hasConsole}}<pre class="console">{{#consoleLines}}{{.}}
        {{/consoleLines}}</pre>{{/hasConsole}}
        <h2>Journal</h2>
        <table>
        <tr><th>Time</th><th>From</th><th>To</th><th>Cause</th></tr>
        {{#journal}}
        <tr><td>{{time}}</td><td>{{from}}</td><td>{{to}}</td><td>{{cause}}</td></tr>
        {{/journal}}
        </table>
        """

    static let group = """
        <h1>Group {{name}}</h1>
        <p><a href="/console/projects/{{project}}">← project {{project}}</a></p>
        <table>
        <tr><th>State</th><td class="state" id="state">{{state}}</td></tr>
        <tr><th>Desired</th><td id="desired">{{desired}} (bounds {{min}}–{{max}})</td></tr>
        <tr><th>Warm</th><td id="warm">{{warm}} suspended, resumed first on a scale-out</td></tr>
        <tr><th>Members</th><td>{{flavor}} guests of image {{image}}; scale-in takes the {{scaleIn}} first</td></tr>
        <tr><th>Policy</th><td><code style="overflow-wrap: anywhere">{{policy}}</code></td></tr>
        {{#backoff}}<tr><th>Back-off</th><td id="backoff">{{backoff}}</td></tr>{{/backoff}}
        <tr><th>ID</th><td>{{id}}</td></tr>
        </table>
        {{#canManage}}
        <form method="post" action="/console/groups/{{id}}/desired">{{>csrf}}
        <label>Desired <input type="number" name="desired" value="{{desired}}" min="{{min}}" max="{{max}}" required></label>
        <button type="submit">Set</button></form>
        <form method="post" action="/console/groups/{{id}}/delete">{{>csrf}}<button type="submit">Delete the group</button></form>
        {{/canManage}}
        <h2>Timeline</h2>
        <figure id="timeline">{{{chart}}}
        <figcaption>The last 10 minutes (or since the group was made): the members' mean metric (solid blue, left scale), the desired count (dashed orange) and the running members (solid green), both on the right scale.</figcaption></figure>
        <h2>Members</h2>
        {{#hasMembers}}
        <table>
        <tr><th>Name</th><th>State</th><th>Host</th></tr>
        {{#members}}
        <tr><td><a href="/console/guests/{{id}}">{{name}}</a></td><td class="state">{{state}}</td><td>{{host}}</td></tr>
        {{/members}}
        </table>
        {{/hasMembers}}
        {{^hasMembers}}<p>No members.</p>{{/hasMembers}}
        <h2>Actions</h2>
        <table>
        <tr><th>Time</th><th>From</th><th>To</th><th>Reason</th></tr>
        {{#actions}}
        <tr><td>{{time}}</td><td>{{from}}</td><td>{{to}}</td><td>{{reason}}</td></tr>
        {{/actions}}
        </table>
        """

    static let admin = """
        <h1>Site</h1>
        <h2>Hosts</h2>
        <table>
        <tr><th>Host</th><th>Address</th><th>vCPUs used</th><th>Memory used</th><th>Disk used</th><th>KVM</th>
        <th>Health</th><th>Reason</th><th>Quarantine</th><th>Takes guests</th><th>Last heartbeat</th><th>Mode</th>
        <th>Power</th><th>Maintenance</th></tr>
        {{#hosts}}
        <tr><td>{{id}}</td><td>{{address}}</td><td>{{usedVCPUs}} / {{vcpus}}</td><td>{{usedMemory}} / {{memory}}</td>
        <td>{{usedDisk}} / {{disk}}</td><td>{{kvm}}</td><td>{{health}}</td><td>{{healthReason}}</td><td>{{quarantine}}</td>
        <td>{{takesGuests}}</td><td>{{lastHeartbeat}}</td><td id="mode-{{id}}">{{mode}}</td>
        <td id="power-{{id}}">{{power}}</td><td>{{#drain}}<span id="drain-{{id}}">{{drain}}</span>{{/drain}}
        <form class="inline" method="post" action="/console/hosts/{{id}}/{{action}}">{{>csrf}}
        <button type="submit">{{actionLabel}}</button></form></td></tr>
        {{/hosts}}
        </table>
        {{^hosts}}<p>No host has reported yet.</p>{{/hosts}}
        <h2>Projects</h2>
        <table>
        <tr><th>Project</th><th>Guests</th><th>vCPUs</th><th>Memory</th><th>Disk</th></tr>
        {{#projects}}
        <tr><td><a href="/console/projects/{{name}}">{{name}}</a></td><td>{{guests}} / {{quotaGuests}}</td>
        <td>{{vcpus}} / {{quotaVCPUs}}</td><td>{{memory}} / {{quotaMemory}}</td><td>{{disk}} / {{quotaDisk}}</td></tr>
        {{/projects}}
        </table>
        """

    static let error = """
        <h1>{{heading}}</h1>
        <p class="error" role="alert">{{message}}</p>
        <p><a href="/console">Back to your projects</a></p>
        """
}
