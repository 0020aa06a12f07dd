"""OpenAI's GA Realtime API dialect: the events `openai` SDK's `client.realtime.connect()` speaks.

Client models accept unknown keys (`extra="allow"`) so that a field we do not implement can be reported
by name (`unsupported_fields`) instead of being ignored or failing with a generic validation error.
Server models mirror `openai.types.realtime.*` field for field; every server event carries an event_id.
"""

from realtime.protocol_openai.client_events import (
    CLIENT_EVENTS as CLIENT_EVENTS,
)
from realtime.protocol_openai.client_events import (
    UNSUPPORTED_CLIENT_EVENTS as UNSUPPORTED_CLIENT_EVENTS,
)
from realtime.protocol_openai.client_events import (
    ClientEvent as ClientEvent,
)
from realtime.protocol_openai.client_events import (
    ContentPartIn as ContentPartIn,
)
from realtime.protocol_openai.client_events import (
    ConversationItemCreateEvent as ConversationItemCreateEvent,
)
from realtime.protocol_openai.client_events import (
    ConversationItemDeleteEvent as ConversationItemDeleteEvent,
)
from realtime.protocol_openai.client_events import (
    ConversationItemRetrieveEvent as ConversationItemRetrieveEvent,
)
from realtime.protocol_openai.client_events import (
    ConversationItemTruncateEvent as ConversationItemTruncateEvent,
)
from realtime.protocol_openai.client_events import (
    InputAudioBufferAppendEvent as InputAudioBufferAppendEvent,
)
from realtime.protocol_openai.client_events import (
    InputAudioBufferClearEvent as InputAudioBufferClearEvent,
)
from realtime.protocol_openai.client_events import (
    InputAudioBufferCommitEvent as InputAudioBufferCommitEvent,
)
from realtime.protocol_openai.client_events import (
    MessageItemIn as MessageItemIn,
)
from realtime.protocol_openai.client_events import (
    ResponseAudio as ResponseAudio,
)
from realtime.protocol_openai.client_events import (
    ResponseAudioOutput as ResponseAudioOutput,
)
from realtime.protocol_openai.client_events import (
    ResponseCancelEvent as ResponseCancelEvent,
)
from realtime.protocol_openai.client_events import (
    ResponseCreateEvent as ResponseCreateEvent,
)
from realtime.protocol_openai.client_events import (
    ResponseParams as ResponseParams,
)
from realtime.protocol_openai.client_events import (
    SessionUpdateEvent as SessionUpdateEvent,
)
from realtime.protocol_openai.common import (
    ClientModel as ClientModel,
)
from realtime.protocol_openai.common import (
    ErrorDetail as ErrorDetail,
)
from realtime.protocol_openai.common import (
    ErrorEvent as ErrorEvent,
)
from realtime.protocol_openai.common import (
    ServerEvent as ServerEvent,
)
from realtime.protocol_openai.common import (
    new_id as new_id,
)
from realtime.protocol_openai.common import (
    unsupported_fields as unsupported_fields,
)
from realtime.protocol_openai.input_events import (
    ClearedEvent as ClearedEvent,
)
from realtime.protocol_openai.input_events import (
    CommittedEvent as CommittedEvent,
)
from realtime.protocol_openai.input_events import (
    LogProb as LogProb,
)
from realtime.protocol_openai.input_events import (
    SessionCreatedEvent as SessionCreatedEvent,
)
from realtime.protocol_openai.input_events import (
    SessionUpdatedEvent as SessionUpdatedEvent,
)
from realtime.protocol_openai.input_events import (
    SpeechStartedEvent as SpeechStartedEvent,
)
from realtime.protocol_openai.input_events import (
    SpeechStoppedEvent as SpeechStoppedEvent,
)
from realtime.protocol_openai.input_events import (
    TimeoutTriggeredEvent as TimeoutTriggeredEvent,
)
from realtime.protocol_openai.input_events import (
    TranscriptionCompletedEvent as TranscriptionCompletedEvent,
)
from realtime.protocol_openai.input_events import (
    TranscriptionDeltaEvent as TranscriptionDeltaEvent,
)
from realtime.protocol_openai.input_events import (
    TranscriptionFailedEvent as TranscriptionFailedEvent,
)
from realtime.protocol_openai.input_events import (
    TranscriptionUsageDuration as TranscriptionUsageDuration,
)
from realtime.protocol_openai.input_events import (
    TranscriptionUsageInputDetails as TranscriptionUsageInputDetails,
)
from realtime.protocol_openai.input_events import (
    TranscriptionUsageTokens as TranscriptionUsageTokens,
)
from realtime.protocol_openai.items import (
    ContentPart as ContentPart,
)
from realtime.protocol_openai.items import (
    ConversationItemAddedEvent as ConversationItemAddedEvent,
)
from realtime.protocol_openai.items import (
    ConversationItemDeletedEvent as ConversationItemDeletedEvent,
)
from realtime.protocol_openai.items import (
    ConversationItemDoneEvent as ConversationItemDoneEvent,
)
from realtime.protocol_openai.items import (
    ConversationItemRetrievedEvent as ConversationItemRetrievedEvent,
)
from realtime.protocol_openai.items import (
    ConversationItemTruncatedEvent as ConversationItemTruncatedEvent,
)
from realtime.protocol_openai.items import (
    MessageItem as MessageItem,
)
from realtime.protocol_openai.responses import (
    ContentPartAddedEvent as ContentPartAddedEvent,
)
from realtime.protocol_openai.responses import (
    ContentPartDoneEvent as ContentPartDoneEvent,
)
from realtime.protocol_openai.responses import (
    InputTokenDetails as InputTokenDetails,
)
from realtime.protocol_openai.responses import (
    OutputAudioDeltaEvent as OutputAudioDeltaEvent,
)
from realtime.protocol_openai.responses import (
    OutputAudioDoneEvent as OutputAudioDoneEvent,
)
from realtime.protocol_openai.responses import (
    OutputAudioTranscriptDeltaEvent as OutputAudioTranscriptDeltaEvent,
)
from realtime.protocol_openai.responses import (
    OutputAudioTranscriptDoneEvent as OutputAudioTranscriptDoneEvent,
)
from realtime.protocol_openai.responses import (
    OutputItemAddedEvent as OutputItemAddedEvent,
)
from realtime.protocol_openai.responses import (
    OutputItemDoneEvent as OutputItemDoneEvent,
)
from realtime.protocol_openai.responses import (
    OutputTextDeltaEvent as OutputTextDeltaEvent,
)
from realtime.protocol_openai.responses import (
    OutputTextDoneEvent as OutputTextDoneEvent,
)
from realtime.protocol_openai.responses import (
    OutputTokenDetails as OutputTokenDetails,
)
from realtime.protocol_openai.responses import (
    Response as Response,
)
from realtime.protocol_openai.responses import (
    ResponseCreatedEvent as ResponseCreatedEvent,
)
from realtime.protocol_openai.responses import (
    ResponseDoneEvent as ResponseDoneEvent,
)
from realtime.protocol_openai.responses import (
    ResponseStatusDetails as ResponseStatusDetails,
)
from realtime.protocol_openai.responses import (
    ResponseUsage as ResponseUsage,
)
from realtime.protocol_openai.session_config import (
    AudioConfig as AudioConfig,
)
from realtime.protocol_openai.session_config import (
    AudioFormat as AudioFormat,
)
from realtime.protocol_openai.session_config import (
    AudioInputConfig as AudioInputConfig,
)
from realtime.protocol_openai.session_config import (
    AudioOutputConfig as AudioOutputConfig,
)
from realtime.protocol_openai.session_config import (
    SessionConfig as SessionConfig,
)
from realtime.protocol_openai.session_config import (
    TranscriptionConfig as TranscriptionConfig,
)
from realtime.protocol_openai.session_config import (
    TurnDetectionConfig as TurnDetectionConfig,
)
from realtime.protocol_openai.session_config import (
    VoiceId as VoiceId,
)
