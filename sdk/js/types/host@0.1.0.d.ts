// world agentcap:tools/host@0.1.0
export type * as AgentcapToolsConsent010 from './interfaces/agentcap-tools-consent.js'; // import agentcap:tools/consent@0.1.0
export type * as AgentcapToolsData010 from './interfaces/agentcap-tools-data.js'; // import agentcap:tools/data@0.1.0
export type * as AgentcapToolsFiles010 from './interfaces/agentcap-tools-files.js'; // import agentcap:tools/files@0.1.0
export type * as AgentcapToolsForum010 from './interfaces/agentcap-tools-forum.js'; // import agentcap:tools/forum@0.1.0
export type * as AgentcapToolsMail010 from './interfaces/agentcap-tools-mail.js'; // import agentcap:tools/mail@0.1.0
